/*
 * Enhancements for the Smart Connector pages. Every control also works without
 * this script: the client is a plain select, the budget code select lists the
 * codes of all clients, all fields stay visible, and Test Connector opens its
 * result as a page instead of a dialog.
 */
(function () {
  "use strict";

  var SEARCH_DELAY_MS = 200;

  function debounce(callback, delayMs) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(callback, delayMs);
    };
  }

  function fetchJson(url) {
    return fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      if (!response.ok) {
        throw new Error(url + " responded with HTTP " + response.status);
      }
      return response.json();
    });
  }

  /*
   * Replace the client select by a search-as-you-type combobox. The select
   * stays in the form, hidden, and carries the chosen client id.
   */
  function enhanceClientSelect(select) {
    var searchUrl = select.dataset.clientSearch;
    var listId = select.id + "-results";
    var input = document.createElement("input");
    input.type = "text";
    input.id = select.id + "-search";
    input.className = "form-control" + (select.classList.contains("is-invalid") ? " is-invalid" : "");
    input.placeholder = "Type to search clients";
    input.autocomplete = "off";
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", listId);
    ["aria-describedby", "aria-invalid"].forEach(function (name) {
      if (select.hasAttribute(name)) {
        input.setAttribute(name, select.getAttribute(name));
      }
    });

    var list = document.createElement("ul");
    list.id = listId;
    list.className = "list-group position-absolute w-100 shadow-sm overflow-auto";
    list.style.zIndex = "1000";
    list.style.maxHeight = "20rem";
    list.setAttribute("role", "listbox");
    list.hidden = true;

    var wrapper = document.createElement("div");
    wrapper.className = "position-relative";
    wrapper.appendChild(input);
    wrapper.appendChild(list);
    select.insertAdjacentElement("afterend", wrapper);

    var label = document.querySelector('label[for="' + select.id + '"]');
    if (label) {
      label.htmlFor = input.id;
    }
    select.hidden = true;
    select.tabIndex = -1;

    var results = [];
    var activeIndex = -1;
    var requestNumber = 0;

    function selectedName() {
      var option = select.options[select.selectedIndex];
      return option && option.value ? option.text : "";
    }

    function setOpen(open) {
      list.hidden = !open;
      input.setAttribute("aria-expanded", open ? "true" : "false");
      if (!open) {
        input.removeAttribute("aria-activedescendant");
      }
    }

    function showMessage(text) {
      var item = document.createElement("li");
      item.className = "list-group-item text-body-secondary";
      item.textContent = text;
      list.replaceChildren(item);
      setOpen(true);
    }

    function renderResults() {
      if (results.length === 0) {
        showMessage("No client matches; check the spelling.");
        return;
      }
      list.replaceChildren();
      results.forEach(function (client, index) {
        var item = document.createElement("li");
        item.id = listId + "-" + index;
        item.className = "list-group-item list-group-item-action" + (index === activeIndex ? " active" : "");
        item.setAttribute("role", "option");
        item.setAttribute("aria-selected", index === activeIndex ? "true" : "false");
        item.textContent = client.name;
        // mousedown would blur the input before the click lands.
        item.addEventListener("mousedown", function (event) {
          event.preventDefault();
        });
        item.addEventListener("click", function () {
          choose(client);
        });
        list.appendChild(item);
      });
      if (activeIndex >= 0) {
        input.setAttribute("aria-activedescendant", listId + "-" + activeIndex);
      } else {
        input.removeAttribute("aria-activedescendant");
      }
      setOpen(true);
    }

    function choose(client) {
      var value = String(client.id);
      var option = Array.prototype.find.call(select.options, function (candidate) {
        return candidate.value === value;
      });
      if (!option) {
        option = new Option(client.name, value);
        select.add(option);
      }
      select.value = value;
      input.value = client.name;
      setOpen(false);
      select.dispatchEvent(new Event("change", { bubbles: true }));
    }

    var search = debounce(function () {
      var number = ++requestNumber;
      fetchJson(searchUrl + "?q=" + encodeURIComponent(input.value.trim()))
        .then(function (clients) {
          if (number !== requestNumber) {
            return; // a newer search is on its way
          }
          results = clients;
          activeIndex = clients.length ? 0 : -1;
          renderResults();
        })
        .catch(function (error) {
          console.error("client search failed:", error);
          showMessage("The client search failed; reload the page and try again.");
        });
    }, SEARCH_DELAY_MS);

    input.value = selectedName();
    input.addEventListener("input", function () {
      if (input.value.trim() === "" && select.value !== "") {
        select.value = "";
        select.dispatchEvent(new Event("change", { bubbles: true }));
      }
      search();
    });
    input.addEventListener("focus", search);
    input.addEventListener("keydown", function (event) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        if (list.hidden || results.length === 0) {
          search();
          return;
        }
        event.preventDefault();
        var step = event.key === "ArrowDown" ? 1 : -1;
        activeIndex = (activeIndex + step + results.length) % results.length;
        renderResults();
      } else if (event.key === "Enter" && !list.hidden && activeIndex >= 0) {
        event.preventDefault(); // choose the client instead of submitting the form
        choose(results[activeIndex]);
      } else if (event.key === "Escape") {
        setOpen(false);
      }
    });
    input.addEventListener("blur", function () {
      setOpen(false);
      // The hidden select is what the form sends, so the text must show its client.
      input.value = selectedName();
    });
  }

  /* Keep the budget code select to the codes of the chosen client. */
  function connectBudgetCodes(clientSelect, codeSelect) {
    var urlTemplate = clientSelect.dataset.budgetCodesUrl;

    function setCodes(codes, current, keepUnknown) {
      codeSelect.replaceChildren(new Option("No budget code", ""));
      codes.forEach(function (code) {
        codeSelect.add(new Option(code, code));
      });
      if (current && codes.indexOf(current) === -1 && keepUnknown) {
        // Keep a rejected value visible next to its error message.
        codeSelect.add(new Option(current, current));
      }
      codeSelect.value = current && (keepUnknown || codes.indexOf(current) !== -1) ? current : "";
    }

    function load(keepUnknown) {
      var clientId = clientSelect.value;
      var current = codeSelect.value;
      if (!clientId) {
        if (!keepUnknown) {
          setCodes([], "", false);
        }
        return;
      }
      var url = urlTemplate.replace("/0/", "/" + encodeURIComponent(clientId) + "/");
      fetchJson(url)
        .then(function (codes) {
          setCodes(codes, current, keepUnknown);
        })
        .catch(function (error) {
          console.error("loading budget codes failed:", error);
        });
    }

    clientSelect.addEventListener("change", function () {
      load(false);
    });
    load(true);
  }

  /* Show only the fields of the chosen authorization method (OAuth2 or Password). */
  function connectAuthMethod(form) {
    var radios = form.querySelectorAll('input[name="auth_method"]');

    function update() {
      var checked = form.querySelector('input[name="auth_method"]:checked');
      var method = checked ? checked.value : "";
      form.querySelectorAll("[data-auth]").forEach(function (element) {
        element.hidden = method !== "" && element.dataset.auth !== method;
      });
    }

    radios.forEach(function (radio) {
      radio.addEventListener("change", update);
    });
    update();
  }

  /* Fill Host Name with the provider's IMAP server unless the admin typed another. */
  function connectProviderHost(form) {
    var provider = form.querySelector("select[data-imap-hosts]");
    var host = form.querySelector('input[name="host"]');
    if (!provider || !host) {
      return;
    }
    var hosts = JSON.parse(provider.dataset.imapHosts);
    var previous = hosts[provider.value] || "";
    provider.addEventListener("change", function () {
      var next = hosts[provider.value] || "";
      if (next && (host.value.trim() === "" || host.value.trim() === previous)) {
        host.value = next;
      }
      previous = next;
    });
  }

  /*
   * Show the elements in `container` whose `attribute` lists the value that
   * `currentValue()` returns, and hide the others. The attribute may list
   * several values, separated by spaces. A change of any of `controls` (a
   * select, or a group of radio buttons) updates them.
   */
  function showMatching(container, controls, attribute, currentValue) {
    function update() {
      var value = currentValue();
      container.querySelectorAll("[" + attribute + "]").forEach(function (element) {
        var values = element.getAttribute(attribute).split(" ");
        element.hidden = value !== "" && values.indexOf(value) === -1;
      });
    }
    controls.forEach(function (control) {
      control.addEventListener("change", update);
    });
    update();
  }

  function checkedValue(form, name) {
    var checked = form.querySelector('input[name="' + name + '"]:checked');
    return checked ? checked.value : "";
  }

  /* Show the fields of the chosen radio button of group `name`, marked with `attribute`. */
  function connectRadios(form, name, attribute) {
    var radios = form.querySelectorAll('input[name="' + name + '"]');
    showMatching(form, radios, attribute, function () {
      return checkedValue(form, name);
    });
  }

  /* Show only the fields that a store section's location uses. Nowhere uses none. */
  function connectStores(form) {
    form.querySelectorAll("fieldset[data-store]").forEach(function (fieldset) {
      var select = fieldset.querySelector("select[data-store-location]");
      if (!select) {
        return;
      }
      showMatching(fieldset, [select], "data-store-kinds", function () {
        return select.value;
      });
    });
  }

  /*
   * Show only the inputs that the chosen Files location uses: the mailbox
   * settings for E-mail, the server and path settings for the others.
   */
  function connectFilesLocation(form) {
    var select = form.querySelector("select[data-files-location-select]");
    if (!select) {
      return;
    }
    showMatching(form, [select], "data-files-location", function () {
      return select.value;
    });
  }

  /*
   * Post the Test Connector form in the background and show the returned
   * fragment in the dialog that the form's data-test-connector names. The
   * fragment comes from the server's own template, which escapes every value.
   */
  function connectTestConnector(form) {
    var dialog = document.querySelector(form.dataset.testConnector);
    if (!dialog || !window.bootstrap) {
      return; // the form posts normally and the result opens as a page
    }
    var body = dialog.querySelector("[data-test-result]");
    var button = form.querySelector('button[type="submit"]');

    function showText(className, text) {
      var paragraph = document.createElement("p");
      paragraph.className = className;
      paragraph.textContent = text;
      body.replaceChildren(paragraph);
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      showText("mb-0", "Connecting to the mailbox and reading the folder. This changes nothing in it.");
      window.bootstrap.Modal.getOrCreateInstance(dialog).show();
      button.disabled = true;
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { Accept: "text/html", "X-Requested-With": "XMLHttpRequest" },
      })
        .then(function (response) {
          if (!response.ok) {
            throw new Error(form.action + " responded with HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          body.innerHTML = html;
        })
        .catch(function (error) {
          console.error("Test Connector failed:", error);
          showText(
            "alert alert-danger mb-0",
            "The test could not be started (" + error.message + "). Reload the page and click Test Connector again."
          );
        })
        .finally(function () {
          button.disabled = false;
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-test-connector]").forEach(connectTestConnector);

    var form = document.querySelector("form[data-connector-form]");
    if (!form) {
      return;
    }
    var clientSelect = form.querySelector("select[data-client-search]");
    var codeSelect = form.querySelector("select[data-budget-code-select]");
    if (clientSelect) {
      enhanceClientSelect(clientSelect);
      if (codeSelect) {
        connectBudgetCodes(clientSelect, codeSelect);
      }
    }
    connectAuthMethod(form);
    connectProviderHost(form);
    connectRadios(form, "after_processing", "data-after-processing");
    connectRadios(form, "schedule_kind", "data-schedule");
    connectStores(form);
    connectFilesLocation(form);
  });
})();
