# Sourced by scripts/demo and scripts/test (not run on its own): the virtual environment they
# install seqshm into, so that they work where pip refuses to install into the system's Python
# (PEP 668 "externally-managed-environment", as on Debian 12 and Ubuntu 23.04 and later).
#
#   seqshm_venv REPO   makes the venv, or reuses it when it has a working pip, and sets VENV_PY
#                      to its python (an absolute path)
# Environment:
#   SEQSHM_VENV    the venv directory (default: REPO/.venv); a relative path is taken from the
#                  directory the script was started in
#   SEQSHM_PYTHON  the Python that makes a new venv (default: python3); a pythonX.Y name that
#                  does not run is looked for among pyenv's versions (see _seqshm_venv_python)
# A Python without `-m venv` support (Debian and Ubuntu split ensurepip into python3-venv):
# as root with apt-get, the package is installed; otherwise the message names it.

_seqshm_venv_say() { printf 'seqshm: %s\n' "$*" >&2; }

# Debian and Ubuntu ship ensurepip, which `python3 -m venv` needs, in python3.X-venv (python3-venv
# depends on the one for the default python3).
_seqshm_venv_module() {
	local py=$1 ver pkg
	"$py" -c 'import ensurepip, venv' 2>/dev/null && return 0
	ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || return 1
	pkg=python$ver-venv
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
		_seqshm_venv_say "$py cannot make a virtual environment; installing $pkg with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null ||
			{ _seqshm_venv_say "error: apt-get install $pkg failed"; return 1; }
		"$py" -c 'import ensurepip, venv' 2>/dev/null && return 0
		_seqshm_venv_say "error: $py still cannot make a virtual environment after installing $pkg"
		return 1
	fi
	_seqshm_venv_say "error: $py cannot make a virtual environment (no ensurepip module)."
	_seqshm_venv_say "Install the package python3-venv (for Python $ver: $pkg), e.g."
	_seqshm_venv_say "    sudo apt-get install $pkg"
	_seqshm_venv_say "or point SEQSHM_VENV at an existing virtual environment."
	return 1
}

# _seqshm_venv_python NAME: prints a command for the Python NAME that runs. pyenv (as on this
# project's CI machines) puts a shim for every installed version on PATH, but a shim runs only
# the versions `pyenv version` selects ("pyenv: python3.10: command not found" otherwise):
# then the newest pyenv-installed X.Y.Z of a pythonX.Y name is taken. A pythonX.Y neither there
# nor on PATH is installed from Debian's archive when it has it (as root; bookworm has 3.11,
# trixie 3.13). PyPI has no interpreters; Python 3.10 on Debian 12 means pyenv or a source build.
_seqshm_venv_python() {
	local py=$1 ver found=
	if "$py" -c 'import sys' >/dev/null 2>&1; then
		printf '%s\n' "$py"
		return 0
	fi
	[[ $py =~ ^python([0-9]+\.[0-9]+)$ ]] || return 1
	ver=${BASH_REMATCH[1]}
	found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$ver".*/bin/"python$ver" 2>/dev/null |
		sort -V | tail -n 1) || true
	if [[ -n $found ]] && "$found" -c 'import sys' >/dev/null 2>&1; then
		printf '%s\n' "$found"
		return 0
	fi
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null &&
		apt-cache show "python$ver" >/dev/null 2>&1; then
		_seqshm_venv_say "$py not found; installing python$ver and python$ver-venv with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$ver" "python$ver-venv" \
			>/dev/null || return 1
		[[ -x /usr/bin/python$ver ]] && printf '%s\n' "/usr/bin/python$ver" && return 0
	fi
	return 1
}

seqshm_venv() {
	local venv=${SEQSHM_VENV:-$1/.venv} py=${SEQSHM_PYTHON:-python3}
	[[ $venv == /* ]] || venv=$PWD/$venv
	VENV_PY=$venv/bin/python
	local have want=
	have=$("$VENV_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || have=
	# An explicit SEQSHM_PYTHON of another version than the existing venv's remakes it (running
	# the suite "with python3.10" in a 3.11 venv would test 3.11).
	if [[ -n ${SEQSHM_PYTHON:-} && -n $have ]] && py=$(_seqshm_venv_python "$py"); then
		want=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || want=
	fi
	if [[ -f $venv/pyvenv.cfg ]] && "$VENV_PY" -m pip --version >/dev/null 2>&1 &&
		[[ -z $want || $want == "$have" ]]; then
		return 0
	fi
	[[ -z $want || $want == "$have" ]] ||
		_seqshm_venv_say "$venv has Python $have, SEQSHM_PYTHON ($SEQSHM_PYTHON) is $want"
	# Only a venv (a broken one: no pip, or its base Python gone) or an empty directory is
	# (re)made in place: anything else at that path is not ours to clear.
	if [[ -e $venv && ! -f $venv/pyvenv.cfg ]] &&
		! { [[ -d $venv ]] && [[ -z $(ls -A "$venv") ]]; }; then
		_seqshm_venv_say "error: $venv exists and is not a virtual environment; set SEQSHM_VENV"
		return 1
	fi
	if ! py=$(_seqshm_venv_python "$py"); then
		_seqshm_venv_say "error: ${SEQSHM_PYTHON:-python3} not found (a Python that" \
			"pyproject.toml's requires-python admits is needed; SEQSHM_PYTHON names it)"
		return 1
	fi
	_seqshm_venv_module "$py" || return 1
	_seqshm_venv_say "making a virtual environment in $venv"
	"$py" -m venv --clear "$venv"
}
