// Reads a JSON list of cases on stdin and prints the live line's computation for each, so that
// tests/test_javascript_split.py can compare it with the Python switch plan.
"use strict";

const path = require("path");
const split = require(path.join(__dirname, "..", "..", "javascript", "sdxl_refiner.js"));

let input = "";
process.stdin.on("data", (chunk) => {
    input += chunk;
});
process.stdin.on("end", () => {
    const results = JSON.parse(input).map((c) => {
        if (c.noise !== undefined) {
            return {noiseHint: split.noiseHint(c.sampler, c.noise)};
        }
        const steps = split.stepsRun(c.steps, c.strength, c.isImg2img, c.fixSteps);
        const plan = split.planSplit(steps, c.percent, c.startStep);
        return {stepsRun: steps, baseSteps: plan.baseSteps, refinerSteps: plan.refinerSteps, ...split.describeSplit(plan, c.percent, c.startStep)};
    });
    process.stdout.write(JSON.stringify(results));
});
