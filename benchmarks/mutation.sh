#!/usr/bin/env bash
# Mutation testing of the decision code: mutmut changes the code one small edit at a time and runs
# only the offline tests that reach the changed function; a mutant that no test notices is a hole.
# Modules: [tool.mutmut] only_mutate in pyproject.toml. Arguments narrow the run to mutant names
# (globs), e.g. benchmarks/mutation.sh 'sdxl_refiner.core.unet_config*'; named mutants run again even
# when they have a result. Results: mutmut results, mutmut show <name>.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -m pip install --quiet 'mutmut==3.8.1'
# mutmut copies the tests only into a fresh mutants/; a test written since must reach it too
if [ -d mutants ]; then rm -rf mutants/tests && cp -r tests mutants/tests; fi
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@"
mutmut results
