#!/usr/bin/env bash
# Distribution checks that need a fresh environment (run by `make test-packaging`, and so by CI):
#   1. `python -m build` makes the sdist and the wheel (the wheel from the sdist) and `twine check` passes;
#   2. a fresh venv with only the core install of that wheel: every transcoding decoder is present,
#      `openhi serve` starts, and pydicom's JPEG-LS and JPEG 2000 lossless MR files import as HTJ2K frames
#      that decode to the source pixels (tests/packaging/core_import.py);
#   3. the same venv plus the `testing` extra, as the README says: plain `pytest` runs a user's test that
#      uses the `medical_imaging` fixture, with the response check switched on.
# Everything is built and installed under a temporary directory, never in the checkout.
# Usage: tests/packaging/run.sh [PROJECT_PYTHON]   (default .venv/bin/python: has build and twine)
set -euo pipefail
cd "$(dirname "$0")/../.."
PROJECT_PY=${1:-.venv/bin/python}
here=$PWD
tmp=$(mktemp -d "${TMPDIR:-/tmp}/openhi-packaging.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1  # pip uses the machine's index configuration, as `make` does

step() { printf '\npackaging: %s\n' "$*"; }
elapsed() { echo "packaging: $1 took $((SECONDS - $2)) s"; }

step "build sdist and wheel"
t=$SECONDS
"$PROJECT_PY" -m build --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { tail -40 "$tmp/build.log"; exit 1; }
"$PROJECT_PY" -m twine check --strict "$tmp"/dist/*
wheel=$(ls "$tmp"/dist/openhi-*.whl)
sdist=$(ls "$tmp"/dist/openhi-*.tar.gz)
# the sdist carries what the wheel is built from and what its metadata names
tar -tzf "$sdist" >"$tmp/sdist.txt"
for member in LICENSE README.md pyproject.toml src/openhi/model/service-2.json; do
  grep -qx "openhi-[^/]*/$member" "$tmp/sdist.txt" || { echo "packaging: $member missing from $sdist"; exit 1; }
done
python_in_wheel=$("$PROJECT_PY" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["openhi/model/service-2.json", "openhi/py.typed", "openhi/testing/plugin.py"]
missing = [n for n in need if n not in names]
print("missing: " + ", ".join(missing) if missing else "ok")
EOF
)
[ "$python_in_wheel" = ok ] || { echo "packaging: wheel $python_in_wheel"; exit 1; }
elapsed "build + twine check" "$t"

step "fresh venv, core install only"
t=$SECONDS
base_py=$("$PROJECT_PY" -c 'import sys; print(sys._base_executable)')
"$base_py" -m venv "$tmp/venv"
venv_py="$tmp/venv/bin/python"
"$venv_py" -m pip install -qq --no-compile "$wheel"
elapsed "core install" "$t"
# nothing of the checkout on the path: the driver runs from the temp dir, with the installed package
t=$SECONDS
(cd "$tmp" && "$venv_py" -c 'import openhi, sys; assert "/site-packages/" in openhi.__file__, openhi.__file__' \
  && "$venv_py" -c 'from openhi.codec.decoders import missing_decoders; assert not missing_decoders(), missing_decoders()' \
  && "$venv_py" "$here/tests/packaging/core_import.py")
elapsed "core import check" "$t"

step "the pytest plugin with the testing extra"
t=$SECONDS
"$venv_py" -m pip install -qq --no-compile "$wheel[testing]"
mkdir "$tmp/user-project"
cp tests/packaging/user_test_plugin.py "$tmp/user-project/test_openhi_plugin.py"
(cd "$tmp/user-project" && "$tmp/venv/bin/pytest" -q -p no:cacheprovider --openhi-validate-responses)
elapsed "testing extra + plugin test" "$t"
echo "packaging: all checks passed"
