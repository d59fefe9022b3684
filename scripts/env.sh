# Sourced by main.sh and test.sh: offline, use the course's data mirror next to the repository when
# COMPANION_DATA is not set (an absolute path, because chapters run from book/).
if [ -z "${COMPANION_DATA:-}" ] && [ -d "$(dirname "${BASH_SOURCE[0]}")/../../shared/data" ]; then
  COMPANION_DATA="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared/data" && pwd)"
  export COMPANION_DATA
elif [ -n "${COMPANION_DATA:-}" ]; then
  COMPANION_DATA="$(cd "$COMPANION_DATA" && pwd)"
  export COMPANION_DATA
fi
PYTHON=${PYTHON:-python3}
