# A pyenv `install` hook (sourced by pyenv-install before it checks what exists; PYENV_HOOK_PATH
# names this folder's parent). `mlflow models predict --env-manager virtualenv` runs
# `pyenv install --skip-existing X.Y.Z` with PYENV_ROOT set to a fresh temporary folder, so pyenv
# would download CPython's source from python.org and compile it on every call (minutes; and
# python.org is not reachable from every test machine). When the machine's own pyenv already has
# that exact version, this links it into the temporary root, and --skip-existing keeps it.
own_root="${RAYMLP_TEST_PYENV_ROOT:-$HOME/.pyenv}"
for definition in "${DEFINITIONS[@]}"; do
  if [ -x "$own_root/versions/$definition/bin/python" ] && [ ! -e "$PYENV_ROOT/versions/$definition" ]; then
    mkdir -p "$PYENV_ROOT/versions"
    ln -s "$own_root/versions/$definition" "$PYENV_ROOT/versions/$definition"
  fi
done
