# shellcheck shell=bash
# The toolchain part of the two top-level commands (./run-tests.sh and
# deploy/lab/run.sh), sourced by both: find Rust and Go under sudo, check the
# minimum versions, build as the invoking user, hand back what root wrote.
#
#   toolchain_path                 PATH += the usual places of cargo and go (the
#                                  invoking user's too: sudo's secure_path drops them)
#   toolchain_check NAME [rust] [go] [python]
#                                  exit 2 with one line if one is missing or too old
#   as_user CMD...                 run CMD as the user who ran sudo (else as is)
#   give_back PATH...              chown what exists of PATH... to that user
#
# The minimum versions, stated in README.md ("What you need"; a test holds the
# two to each other): Rust from Cargo.toml's rust-version (read with python3's
# tomllib, deploy/lib/config_value.py: without Python >= 3.11 the Rust check
# stops with the Python line); Go 1.26, the `go`
# line of the collector builder v0.165.0 and of the collector modules it builds
# (deploy/collector/build.sh); Python 3.11 (the tests and deploy/lab/lab.py).
TOOLCHAIN_MIN_GO=1.26
TOOLCHAIN_MIN_PYTHON=3.11

toolchain_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Empty when python3 cannot read it (missing, older than 3.11); toolchain_check says why.
TOOLCHAIN_MIN_RUST="$(python3 "$toolchain_repo/deploy/lib/config_value.py" "$toolchain_repo/Cargo.toml" \
  workspace package rust-version 2>/dev/null || true)"

# The invoking user's home under sudo, else $HOME.
toolchain_user_home="$HOME"
if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]]; then
  toolchain_user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
fi

toolchain_path() {
  local dir
  for dir in "$toolchain_user_home/.cargo/bin" "$HOME/.cargo/bin" /usr/local/go/bin "$toolchain_user_home/go/bin"; do
    if [[ -d "$dir" ]]; then PATH="$PATH:$dir"; fi
  done
  export PATH
  # rustup's proxies find the toolchain through RUSTUP_HOME (default ~/.rustup):
  # what runs as root (the image build) uses the invoking user's toolchain.
  if [[ "$toolchain_user_home" != "$HOME" ]]; then
    if [[ -z "${RUSTUP_HOME:-}" && -d "$toolchain_user_home/.rustup" ]]; then
      export RUSTUP_HOME="$toolchain_user_home/.rustup"
    fi
    if [[ -z "${CARGO_HOME:-}" && -d "$toolchain_user_home/.cargo" ]]; then
      export CARGO_HOME="$toolchain_user_home/.cargo"
    fi
  fi
}

as_user() {
  if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]]; then
    sudo -u "$SUDO_USER" env "PATH=$PATH" "HOME=$toolchain_user_home" "$@"
  else
    "$@"
  fi
}

give_back() {
  local p
  [[ -n "${SUDO_UID:-}" && "$SUDO_UID" != 0 ]] || return 0
  for p in "$@"; do
    if [[ -e "$p" ]]; then chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$p" 2>/dev/null || true; fi
  done
  return 0
}

# True when version $2 is at least $1 (dotted numbers).
toolchain_at_least() {
  printf '%s\n%s\n' "$1" "$2" | sort -V -C
}

toolchain_check() {
  local name=$1 what found
  shift
  for what in "$@"; do
    case $what in
      rust)
        if [[ -z "$TOOLCHAIN_MIN_RUST" ]]; then
          # the minimum comes from Cargo.toml, read by python3: check Python first
          toolchain_check "$name" python
          TOOLCHAIN_MIN_RUST="$(python3 "$toolchain_repo/deploy/lib/config_value.py" "$toolchain_repo/Cargo.toml" \
            workspace package rust-version 2>&1)" || {
            echo "$name: cannot read the minimum Rust version: $TOOLCHAIN_MIN_RUST" >&2
            exit 2
          }
        fi
        if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
          echo "$name: Rust >= $TOOLCHAIN_MIN_RUST is needed (no cargo/rustc found): install it with rustup, https://rustup.rs" >&2
          exit 2
        fi
        found="$(as_user rustc --version 2>/dev/null | awk '{print $2}')"
        toolchain_at_least "$TOOLCHAIN_MIN_RUST" "${found%%-*}" || {
          echo "$name: Rust >= $TOOLCHAIN_MIN_RUST is needed (found rustc ${found:-unknown} at $(command -v rustc)): rustup update" >&2
          exit 2
        }
        ;;
      go)
        command -v go >/dev/null 2>&1 || {
          echo "$name: Go >= $TOOLCHAIN_MIN_GO is needed (no go found): install it from https://go.dev/doc/install" >&2
          exit 2
        }
        found="$(as_user go env GOVERSION 2>/dev/null)"
        found="${found#go}"
        toolchain_at_least "$TOOLCHAIN_MIN_GO" "${found%%[-+ ]*}" || {
          echo "$name: Go >= $TOOLCHAIN_MIN_GO is needed (found go ${found:-unknown} at $(command -v go)): install it from https://go.dev/doc/install" >&2
          exit 2
        }
        ;;
      python)
        command -v python3 >/dev/null 2>&1 || {
          echo "$name: Python >= $TOOLCHAIN_MIN_PYTHON is needed (no python3 found)" >&2
          exit 2
        }
        found="$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
        toolchain_at_least "$TOOLCHAIN_MIN_PYTHON" "$found" || {
          echo "$name: Python >= $TOOLCHAIN_MIN_PYTHON is needed (found python3 ${found:-unknown} at $(command -v python3))" >&2
          exit 2
        }
        ;;
      *)
        echo "toolchain_check: unknown tool $what" >&2
        exit 2
        ;;
    esac
  done
}
