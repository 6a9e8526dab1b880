#!/usr/bin/env bash
# Installs the Autobahn|Testsuite fuzzing server (wstest) on a real CPython 2.7 into DEST,
# without changing the system: Debian bullseye's python2.7 packages are downloaded with a private
# apt state (under DEST/apt) and extracted with dpkg-deb into DEST/root; pip 20.3.4 (the last for
# 2.7) installs autobahntestsuite and its pinned dependencies into DEST/site. Reaches only
# deb.debian.org and PyPI. Idempotent: does nothing when DEST/ready exists, which it writes last.
#
#   bash tests/autobahn/install.sh .autobahn        # what tests/test_autobahn.py looks for
#
# Then: WSTEST_SITE=DEST/site DEST/python tests/autobahn/wstest.py -m fuzzingserver -s spec.json -u 0
# (tests/autobahn/README.md says why bullseye, and how the suite runs it).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
mkdir -p "$1"
DEST=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -e "$DEST/ready" ]; then
  echo "autobahn: $DEST is ready already"
  exit 0
fi
started=$(date +%s)
# A run that stopped half-way leaves nothing that this one would trust.
rm -rf "$DEST/apt" "$DEST/root" "$DEST/site" "$DEST/dl" "$DEST/python"

# 1. CPython 2.7 from bullseye (bookworm has no python2.7), for this machine's architecture.
A="$DEST/apt"
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/etc" "$A/debs"
: > "$A/etc/status"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" \
  > "$A/etc/sources.list"
APT_OPTS=(-q -o "Dir::Etc::SourceList=$A/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o "Dir::State::status=$A/etc/status"
          -o Acquire::Languages=none -o "APT::Architecture=$(dpkg --print-architecture)")
# As root apt downloads as the user _apt, who may not write to DEST: let it (or apt warns and
# downloads as root, which works too).
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
  chown -R _apt "$A/lists/partial" "$A/cache/archives/partial" "$A/debs" || true
fi
apt-get "${APT_OPTS[@]}" update >"$A/update.log" 2>&1 || { cat "$A/update.log" >&2; exit 1; }
(cd "$A/debs" && apt-get "${APT_OPTS[@]}" download python2.7 python2.7-minimal libpython2.7-stdlib \
    libpython2.7-minimal libssl1.1 libffi7 libpython2.7-dev >"$A/download.log" 2>&1) \
  || { cat "$A/download.log" >&2; exit 1; }
for deb in "$A"/debs/*.deb; do
  dpkg-deb -x "$deb" "$DEST/root"
done
# The multiarch directory (x86_64-linux-gnu, aarch64-linux-gnu...) the libraries came in.
libdir=$(dirname "$(ls "$DEST"/root/usr/lib/*/libssl.so.1.1 | head -n 1)")
cat > "$DEST/python" <<EOF
#!/bin/sh
# CPython 2.7 from bullseye's packages, extracted here (tests/autobahn/install.sh).
LD_LIBRARY_PATH="$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" PYTHONHOME="$DEST/root/usr" exec "$DEST/root/usr/bin/python2.7" "\$@"
EOF
chmod +x "$DEST/python"
"$DEST/python" -c "import ssl, zlib, ctypes, json, sqlite3" \
  || { echo "autobahn: the extracted python2.7 does not run" >&2; exit 1; }
echo "autobahn: python2.7 in $(( $(date +%s) - started ))s"

# 2. pip 20.3.4, downloaded by a Python 3 pip (--isolated everywhere: no machine-wide pip config
# or PIP_* variable applies), run from its wheel, installs itself and the rest into DEST/site.
if python3 -m pip --version >/dev/null 2>&1; then
  PIP3=(python3 -m pip)
else
  python3 -m venv "$DEST/venv3"
  PIP3=("$DEST/venv3/bin/python" -m pip)
fi
"${PIP3[@]}" download -q --isolated --disable-pip-version-check --no-deps --only-binary :all: -d "$DEST/dl" pip==20.3.4
S="$DEST/site"
PIP2=(--isolated --no-cache-dir --disable-pip-version-check --no-python-version-warning --target "$S")
pip2() {  # pip under 2.7, its output in DEST/pip.log, shown when it fails
  "$@" >>"$DEST/pip.log" 2>&1 || { tail -n 40 "$DEST/pip.log" >&2; return 1; }
}
: > "$DEST/pip.log"
pip2 "$DEST/python" "$DEST/dl/pip-20.3.4-py2.py3-none-any.whl/pip" install "${PIP2[@]}" \
  pip==20.3.4 setuptools==44.1.1 wheel==0.37.1
export PYTHONPATH="$S"
# The dependencies first, pinned to the last versions for 2.7 (so nothing asks for a newer one;
# txaio is an sdist, built with the setuptools above). pip warns that site/setuptools (a
# dependency of zope.interface) and, next, site/twisted (autobahn's twisted/plugins, which wstest
# never uses) exist already, and keeps what is there.
pip2 "$DEST/python" -m pip install "${PIP2[@]}" six==1.16.0 txaio==2.1.0 zope.interface==4.6.0 \
  constantly==15.1.0 incremental==16.10.1 attrs==19.3.0 Automat==0.8.0 idna==2.10 hyperlink==19.0.0 \
  PyHamcrest==1.9.0 jinja2==2.11.3 markupsafe==1.1.1 unittest2==1.1.0 traceback2==1.4.0 linecache2==1.0.0 \
  argparse==1.4.0 Twisted==19.10.0
pip2 "$DEST/python" -m pip install "${PIP2[@]}" --no-deps autobahn==0.10.9 autobahntestsuite==25.10.1
unset PYTHONPATH

# 3. wsaccel: autobahn's C UTF-8 validator and XOR masker, which it uses when it can import them.
# Without them it validates and unmasks in pure Python, byte by byte: the 12.*/13.* cases
# (1000 messages of up to 128 KiB each) take about 5 times longer on text. Optional: it needs a
# C compiler (the headers came in libpython2.7-dev above); the sdist ships its C sources.
cc=$("$DEST/python" -c "import sysconfig; print(sysconfig.get_config_var('CC').split()[0])")
if command -v "$cc" >/dev/null \
   && CFLAGS="-I$DEST/root/usr/include/python2.7 -I$DEST/root/usr/include" PYTHONPATH="$S" "$DEST/python" -m pip install "${PIP2[@]}" \
        --no-build-isolation --no-binary wsaccel wsaccel==0.6.6 >"$DEST/wsaccel.log" 2>&1 \
   && "$DEST/python" -c "import sys; sys.path.insert(0, '$S'); import wsaccel.utf8validator, wsaccel.xormask"; then
  echo "autobahn: wsaccel built"
else
  echo "autobahn: wsaccel not built (no $cc? see $DEST/wsaccel.log): the server runs, more slowly"
fi

# 4. The launcher imports the fuzzing server (zope's .pth, the ssl stub, autobahn, Twisted).
WSTEST_SITE="$S" "$DEST/python" "$HERE/wstest.py" --check \
  || { echo "autobahn: wstest does not import" >&2; exit 1; }
rm -rf "$A/cache" "$A/lists" "$DEST/dl"   # what a re-run would not reuse anyway
touch "$DEST/ready"
echo "autobahn: installed in $DEST in $(( $(date +%s) - started ))s"
