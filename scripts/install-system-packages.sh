#!/bin/sh
# Install the Debian packages that the tests and the demo start as real
# servers: Dovecot (IMAP, submission, LMTP), Redis, PostgreSQL, OpenSSH's
# SFTP server and Chromium. Does nothing when all of them are present.
set -eu

missing=""
command -v dovecot >/dev/null 2>&1 || missing="$missing dovecot-core dovecot-imapd dovecot-submissiond dovecot-lmtpd"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v pg_ctlcluster >/dev/null 2>&1 || missing="$missing postgresql"

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "Missing Debian packages:$missing" >&2
    echo "Install them as root: apt-get install$missing" >&2
    exit 1
fi

echo "Installing Debian packages:$missing"
$sudo apt-get update -qq
# The packages' start scripts cannot start services in a container; that is fine,
# because the tests start their own servers.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
