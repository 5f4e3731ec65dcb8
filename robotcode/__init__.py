"""Robot Code: a connector's definition as YAML, and the rules it sets for intake.

The connector form and the Robot Code text field edit the same data. This
package reads, checks and writes that data, and applies its ``rules`` section to
messages, files and job names. It does not touch the database.
"""

from .rules import (
    deadline,
    default_job_name,
    file_accepted,
    job_name,
    message_accepted,
    render_job_name,
)
from .schema import ROBOT_CODE_SCHEMA, RobotCodeError, dump_robot_code, parse_robot_code
from .templates import JOB_NAME_VARIABLES, check_template

__all__ = [
    "JOB_NAME_VARIABLES",
    "ROBOT_CODE_SCHEMA",
    "RobotCodeError",
    "check_template",
    "deadline",
    "default_job_name",
    "dump_robot_code",
    "file_accepted",
    "job_name",
    "message_accepted",
    "parse_robot_code",
    "render_job_name",
]
