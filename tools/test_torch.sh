#!/usr/bin/env bash
# The fast tests against one torch release, in a throwaway virtual environment:
#   tools/test_torch.sh lowest   torch and torchvision at pyproject.toml's lower bounds (torch>=X installs torch==X)
#   tools/test_torch.sh newest   the newest torch and torchvision on the package index
# deepscope's other requirements resolve as pip picks them beside that torch. Environment: PYTHON (default python3),
# VENV (a folder to keep the venv in; default a temporary one, removed at the end), JOBS (pytest-xdist workers, 2).
set -euo pipefail
cd "$(dirname "$0")/.."

# The fast tests, defined here only: the core library's tests (explanations, store and runs, features, embeddings,
# evaluation) that need no optional extra beyond torchvision, no browser and no data set, and take a few minutes
# on 2 cores. Tests of peers (captum, grad-cam), the demos, integrations and the board (test_lazy_import serves
# one) stay in `make test`.
FAST_TESTS=(
    tests/test_bad_input.py
    tests/test_batches.py
    tests/test_closed_forms.py
    tests/test_methods.py
    tests/test_render.py
    tests/test_run.py
    tests/test_store.py
    tests/test_watch.py
    tests/test_graph.py
    tests/test_features.py
    tests/test_maximize.py
    tests/test_evaluate.py
    tests/test_embed.py
)

mode=${1:-}
PYTHON=${PYTHON:-python3}
case "$mode" in
lowest)
    read -r torch_pin vision_pin < <("$PYTHON" - <<'EOF'
import re
import tomllib

with open("pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]


def lower_bound(name: str, requirements: list[str]) -> str:
    for requirement in requirements:
        match = re.fullmatch(rf"{name}\s*>=\s*([0-9][0-9.]*)", requirement.split(";")[0].strip())
        if match:
            return f"{name}=={match[1]}"
    raise SystemExit(f"pyproject.toml states no lower bound {name}>=VERSION")


print(lower_bound("torch", project["dependencies"]), lower_bound("torchvision", project["optional-dependencies"]["vision"]))
EOF
    )
    pins=("$torch_pin" "$vision_pin")
    ;;
newest)
    pins=(torch torchvision)
    # A machine-wide pip constraint file (this project's machines cap torch at the release on their disk) would
    # hide the newest release; this venv exists to try it.
    export PIP_CONSTRAINT=/dev/null
    ;;
*)
    echo "usage: $0 lowest|newest" >&2
    exit 2
    ;;
esac

if [ -z "${VENV:-}" ]; then
    VENV=$(mktemp -d -t deepscope-torch-XXXXXX)
    trap 'rm -rf "$VENV"' EXIT
fi
echo "== $mode: ${pins[*]} in $VENV"
"$PYTHON" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# One resolve for everything, with the pins in it: a requirement that needed another torch fails here instead of
# quietly replacing the torch under test.
"$VENV/bin/python" -m pip install --quiet --upgrade "${pins[@]}" ".[vision]" "pytest>=8" "pytest-xdist>=3"
"$VENV/bin/python" -m pip check
"$VENV/bin/python" -c "import numpy, torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| numpy', numpy.__version__)"
# deepscope is installed, not editable: the tests import what pip built (src/ is not on the path).
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "${JOBS:-2}" "${FAST_TESTS[@]}"
