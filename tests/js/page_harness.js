// Runs javascript/sdxl_refiner.js as the browser does (no `module`), on a minimal page: one element
// per id given on stdin, each holding an input with a value (checked when the value is true). Prints the split line of each tab
// after the WebUI's "UI loaded" callbacks, and the unload request the settings link sends.
"use strict";

const fs = require("fs");
const path = require("path");
const vm = require("vm");

function makeElement(value) {
    const element = {
        children: [],
        textContent: "",
        className: "",
        input: value === undefined ? null : {value: String(value), checked: value === true},
        classList: {
            names: new Set(),
            toggle(name, on) {
                if (on) {
                    this.names.add(name);
                } else {
                    this.names.delete(name);
                }
            },
        },
        appendChild(child) {
            this.children.push(child);
        },
        querySelector(selector) {
            if (selector.startsWith("input")) {
                return selector === "input:checked" ? null : this.input;
            }
            const className = selector.replace(/^\./, "");
            return this.children.find((child) => child.className === className) || null;
        },
    };
    return element;
}

let input = "";
process.stdin.on("data", (chunk) => {
    input += chunk;
});
process.stdin.on("end", () => {
    const page = JSON.parse(input);
    const elements = {};
    for (const [id, value] of Object.entries(page.values)) {
        elements[id] = makeElement(value);
    }
    for (const id of page.lines) {
        elements[id] = makeElement();
    }
    const app = {
        addEventListener() {},
        querySelector(selector) {
            const [idPart, ...rest] = selector.split(" ");
            const element = elements[idPart.slice(1)];
            if (!element) {
                return null;
            }
            return rest.length ? element.querySelector(rest.join(" ")) : element;
        },
    };
    const loaded = [];
    const requests = [];
    const sandbox = {
        window: {},
        console: {log() {}},
        alert() {},
        opts: page.opts,
        gradioApp: () => app,
        document: {createElement: () => makeElement()},
        onUiLoaded: (callback) => loaded.push(callback),
        onAfterUiUpdate: () => {},
        onOptionsChanged: () => {},
        fetch: (url, init) => {
            requests.push({url, method: init.method});
            return {then() {}};
        },
    };
    vm.createContext(sandbox);
    vm.runInContext(fs.readFileSync(path.join(__dirname, "..", "..", "javascript", "sdxl_refiner.js"), "utf8"), sandbox);
    loaded.forEach((callback) => callback());
    sandbox.window.sdxlRefinerUnload();
    const shown = {};
    for (const id of page.lines) {
        const text = elements[id].children[0];
        shown[id] = text ? {text: text.textContent, hint: text.classList.names.has("sdxl-refiner-hint")} : null;
    }
    process.stdout.write(JSON.stringify({shown, requests}));
});
