// SDXL Refiner: the live line under the "Refiner steps %" slider, e.g.
// "Base: steps 1–24 · Refiner: steps 25–30". The split follows sdxl_refiner/core/schedule.py exactly;
// tests/test_javascript_split.py runs the pure functions below under node against the Python plan.

(function() {
    "use strict";

    var USUAL_SHARE_LOW = 10;
    var USUAL_SHARE_HIGH = 30;
    var SIGMA_SWITCH_SAMPLERS = ["DPM fast", "DPM adaptive"];
    // the same list as REFUSED_SAMPLER_LABELS in sdxl_refiner/core/samplers.py
    var REFUSED_SAMPLERS = ["DDIM CFG++", "UniPC", "Restart"];
    // the same list as NOISE_SAMPLER_LABELS in sdxl_refiner/core/samplers.py: the samplers whose fresh
    // noise "Refiner noise" scales
    var NOISE_SAMPLERS = ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
        "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "LCM"];

    // Steps the sampler really runs: img2img runs int(min(strength, 0.999) * steps) + 1 unless the
    // WebUI option "img2img_fix_steps" is set (sd_samplers_common.setup_img2img_steps).
    function stepsRun(steps, denoisingStrength, isImg2img, fixSteps) {
        if (!isImg2img || fixSteps) {
            return steps;
        }
        return Math.trunc(Math.min(denoisingStrength, 0.999) * steps) + 1;
    }

    // Refiner steps for a share of percent %: half rounds up (Math.round), at least 1 when the share
    // is above 0, never more than the steps.
    function refinerStepCount(steps, percent) {
        var count = Math.round(steps * percent / 100);
        if (percent > 0) {
            count = Math.max(count, 1);
        }
        return Math.min(count, steps);
    }

    // The split of one pass. startStep above 0 is the panel's absolute override of the share; at or
    // past the end it leaves the refiner the last step, as the Python plan does.
    function planSplit(steps, percent, startStep) {
        var baseSteps;
        if (startStep > 0) {
            baseSteps = startStep >= steps ? steps - 1 : startStep;
        } else {
            baseSteps = steps - refinerStepCount(steps, percent);
        }
        return {steps: steps, baseSteps: baseSteps, refinerSteps: steps - baseSteps};
    }

    function stepRange(first, last) {
        return first === last ? "step " + first : "steps " + first + "–" + last;
    }

    // samplerName is optional: samplers without a step list switch by sigma, which the line says.
    function describeSplit(split, percent, startStep, samplerName) {
        if (percent === 0 && !(startStep > 0)) {
            return {line: "Refiner off at 0 %: the base runs all " + split.steps + " steps", hint: ""};
        }
        var base = split.baseSteps > 0 ? "Base: " + stepRange(1, split.baseSteps) : "Base: no step";
        var refiner = split.refinerSteps > 0 ? "Refiner: " + stepRange(split.baseSteps + 1, split.steps) : "Refiner: no step";
        var share = startStep > 0 ? 100 * split.refinerSteps / split.steps : percent;
        var hint = "";
        if (split.refinerSteps === 0) {
            hint = "The refiner gets no step: raise the share, or set it to 0 % to turn it off on purpose.";
        } else if (split.baseSteps === 0) {
            hint = "The refiner runs every step: it cannot compose an image from noise; 10–30 % is usual.";
        } else if (share < USUAL_SHARE_LOW || share > USUAL_SHARE_HIGH) {
            hint = "Outside the usual 10–30 % share.";
        }
        if (split.refinerSteps > 0 && REFUSED_SAMPLERS.indexOf(samplerName) >= 0) {
            hint = samplerName + " cannot hand over at a step: pick Euler, Euler a, DPM++ 2M, DPM++ SDE, Heun or LMS.";
        }
        if (split.refinerSteps > 0 && SIGMA_SWITCH_SAMPLERS.indexOf(samplerName) >= 0) {
            var bySigma = samplerName + " has no step list: the refiner takes over where sigma reaches the start of step " + (split.baseSteps + 1) + ".";
            hint = hint ? hint + " " + bySigma : bySigma;
        }
        return {line: base + " · " + refiner, hint: hint};
    }

    // Said before generating, as the infotext says it after: a noise other than 1 that cannot act.
    function noiseHint(samplerName, noise) {
        if (noise === 1 || !samplerName || NOISE_SAMPLERS.indexOf(samplerName) >= 0) {
            return "";
        }
        return "Refiner noise has no effect with " + samplerName + ": it adds no ancestral or SDE noise.";
    }

    var api = {stepsRun: stepsRun, refinerStepCount: refinerStepCount, planSplit: planSplit, describeSplit: describeSplit,
        noiseHint: noiseHint};
    if (typeof module !== "undefined" && module.exports) {
        module.exports = api;
        return;
    }

    // The "Unload refiner now" link of Settings → SDXL Refiner (sdxl_refiner/webui/options.py).
    window.sdxlRefinerUnload = function() {
        fetch("./sdxl-refiner/v1/unload", {method: "POST"}).then(function(response) {
            notify(response.ok ? "SDXL Refiner: refiner unloaded" : "SDXL Refiner: unload failed (" + response.status + ")");
        });
    };

    function notify(text) {
        console.log(text);
        alert(text);
    }

    function numberIn(elemId, fallback) {
        var input = gradioApp().querySelector("#" + elemId + " input[type=number]");
        var value = input ? parseFloat(input.value) : NaN;
        return isNaN(value) ? fallback : value;
    }

    // The panel's toggle: the hidden checkbox of the WebUI's InputAccordion ("<accordion id>-checkbox").
    // Without one (another host's markup) the line is shown as if the panel were on.
    function toggleOn(accordionId) {
        var input = gradioApp().querySelector("#" + accordionId + "-checkbox input[type=checkbox]");
        return input ? Boolean(input.checked) : true;
    }

    function textIn(elemId) {
        var input = gradioApp().querySelector("#" + elemId + " input:checked") || gradioApp().querySelector("#" + elemId + " input");
        return input ? input.value : "";
    }

    function updateTab(tab) {
        var lineElem = gradioApp().querySelector("#sdxl_refiner_" + tab + "_split");
        if (!lineElem) {
            return;
        }
        var isImg2img = tab === "img2img";
        var fixSteps = typeof opts !== "undefined" && Boolean(opts.img2img_fix_steps);
        var steps = stepsRun(numberIn(tab + "_steps", 20), numberIn(tab + "_denoising_strength", 0.75), isImg2img, fixSteps);
        var percent = numberIn("sdxl_refiner_" + tab + "_steps_percent", 20);
        var startStep = numberIn("sdxl_refiner_" + tab + "_start_step", 0);
        var sampler = textIn(tab + "_sampling");
        var on = toggleOn("sdxl_refiner_" + tab);
        var text = on
            ? describeSplit(planSplit(steps, percent, startStep), percent, startStep, sampler)
            : {line: "SDXL Refiner is off: the base runs all " + steps + " steps", hint: ""};
        var noise = on && percent > 0 ? noiseHint(sampler, numberIn("sdxl_refiner_" + tab + "_noise_multiplier", 1)) : "";
        if (noise) {
            text.hint = text.hint ? text.hint + " " + noise : noise;
        }
        var target = lineElem.querySelector(".sdxl-refiner-split-text");
        if (!target) {
            target = document.createElement("span");
            target.className = "sdxl-refiner-split-text";
            lineElem.appendChild(target);
        }
        var shown = text.line + (text.hint ? " — " + text.hint : "");
        if (target.textContent !== shown) {
            target.textContent = shown;
            target.classList.toggle("sdxl-refiner-hint", Boolean(text.hint));
        }
    }

    function updateAll() {
        updateTab("txt2img");
        updateTab("img2img");
    }

    onUiLoaded(function() {
        gradioApp().addEventListener("input", updateAll);
        gradioApp().addEventListener("change", updateAll);
        updateAll();
    });
    onAfterUiUpdate(updateAll);
    onOptionsChanged(updateAll);
})();
