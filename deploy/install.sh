#!/usr/bin/env bash
# Installs Berth on a Debian host from a built checkout (or from an installed release's copy of
# this script): a versioned release under the prefix, the commands on PATH, and per role the
# systemd units, the env files and the berth user. `deploy/install.sh --help` says what and how;
# docs/lab-guide.md walks a whole lab through it. Idempotent: running it again is safe.
set -euo pipefail
umask 022

PROG=install.sh
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SRC=$(cd "$SELF_DIR/.." && pwd -P)

# The commands put on PATH and the entry point each runs (the packages' bin/*.mjs launchers import
# the same files; they are the checkout's, for npm's links).
COMMANDS=(berth berth-controller berth-agent)
declare -A ENTRY=(
  [berth]=packages/cli/dist/main.js
  [berth-controller]=packages/controller/dist/main.js
  [berth-agent]=packages/agent/dist/main.js
)
# systemd's default PATH, which `/usr/bin/env node` in the units searches.
SYSTEMD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WRAPPER_MARK="installed by Berth's deploy/install.sh"

PREFIX=/opt/berth
BIN_DIR=/usr/local/bin
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/berth # fixed: the units and env examples name it
ROOT=""
ROLES=()
ENABLE=1
NOW=0
ROLLBACK=0
BUILD=0
WATCHDOG=0
KEEP=3
RELEASE_NAME=""

usage() {
  cat <<'EOF'
Usage: deploy/install.sh [--role controller|agent|cli]... [options]
       deploy/install.sh --rollback [options]

Installs Berth from this checkout onto this Debian host (Node.js >= 20.11 must be installed). The
checkout must be built; when a package's dist/ is missing, `npm ci && npm run build` is run first
(`npm ci` only when node_modules is missing too). A copy of an installed release (PREFIX/current,
e.g. made with --root on a build machine) installs the same way: run its deploy/install.sh. It
installs:

  PREFIX/releases/NAME    the runtime: packages/*/dist and package.json files, the production
                          node_modules (copied from the checkout's, dev packages left out: no
                          network needed), deploy/ (units, env examples, this script)
  PREFIX/current          symlink to the release in use; PREFIX/previous: the one before it
  BIN_DIR/berth, BIN_DIR/berth-controller, BIN_DIR/berth-agent
                          small wrappers running node on the current release
and for each role:
  controller  the berth system user; /etc/berth/controller.env from the example, only if absent;
              /etc/berth/tls (root:berth 0750) and /etc/berth/etcd (root:root 0700);
              UNIT_DIR/berth-controller.service, enabled
  agent       /etc/berth/agent.env from the example, only if absent; /etc/berth/tls (0700);
              UNIT_DIR/berth-agent.service (and with --watchdog its watchdog drop-in), enabled
  cli         the commands only (also what an install without --role does)

An upgrade is a new release and a switch of the current symlink; the previous one is kept for
--rollback. Units are enabled but never started or restarted without --now. Running it again is
safe: an env file that exists is kept, an installed release is reused, units are rewritten only
when they differ (the replaced file is saved under /etc/berth/replaced/).

Options:
  --role ROLES      controller, agent or cli; repeatable or comma-separated
  --prefix DIR      where the releases go (default /opt/berth)
  --bin-dir DIR     where the commands go (default /usr/local/bin)
  --unit-dir DIR    where the systemd units go (default /etc/systemd/system)
  --root DIR        install under DIR (every path above prefixed by it), without useradd, chown
                    or systemctl: what those would do is printed. For tests and image builds
  --release NAME    name the release (default VERSION-COMMIT, e.g. 0.1.0-51fb286, with
                    -dirty.HASH when the checkout has uncommitted changes; VERSION-HASH
                    without git). An installed release of that name is reused as it is
  --keep N          releases kept, current and previous included (default 3; at least 2)
  --watchdog        agent: also install berth-agent-watchdog.conf as the unit's drop-in (for
                    --watchdog-device in BERTH_AGENT_ARGS; deploy/libvirt-host.md, "Fencing")
  --build           run `npm run build` first even when dist/ exists
  --no-enable       do not `systemctl enable` the units
  --now             start (or restart, onto the new release) the roles' units when done
  --rollback        make the previous release current again and reinstall its units (no copy,
                    no build); with --now, restart the installed units
  -h, --help        this help

Exit status: 0 done, 1 failed (the message says why), 2 bad usage.
See docs/lab-guide.md for a whole lab (etcd, certificates, controllers, agents, upgrades).
EOF
}

# ---- output ------------------------------------------------------------------------------------
step() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
would() { printf '    would run: %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}
usage_error() {
  printf '%s: %s (see --help)\n' "$PROG" "$*" >&2
  exit 2
}

# ---- arguments ---------------------------------------------------------------------------------
add_roles() {
  local r
  IFS=, read -r -a parts <<<"$1"
  [ "${#parts[@]}" -gt 0 ] || usage_error "--role needs a value: controller, agent or cli"
  for r in "${parts[@]}"; do
    case "$r" in
      controller | agent | cli) has_role "$r" || ROLES+=("$r") ;;
      *) usage_error "unknown role: '$r' (controller, agent or cli)" ;;
    esac
  done
}
has_role() {
  local r
  for r in "${ROLES[@]+"${ROLES[@]}"}"; do [ "$r" = "$1" ] && return 0; done
  return 1
}
# A path for the units and wrappers: absolute, no spaces or shell/sed specials, no trailing slash.
clean_path() {
  local name=$1 value=$2
  [[ "$value" =~ ^/[A-Za-z0-9._/+-]*$ ]] || usage_error "$name must be an absolute path of letters, digits and ._/+- (got '$value')"
  [[ "/$value/" != *"/../"* && "/$value/" != *"/./"* ]] || usage_error "$name must not contain . or .. components (got '$value')"
  while [ "${value%/}" != "$value" ] && [ "$value" != / ]; do value=${value%/}; done
  printf '%s' "$value"
}

seen_rollback_conflict=()
while [ $# -gt 0 ]; do
  arg=$1
  value_given=0
  case "$arg" in
    --*=*)
      value_given=1
      set -- "${arg%%=*}" "${arg#*=}" "${@:2}"
      arg=$1
      ;;
  esac
  case "$arg" in
    --role | --prefix | --bin-dir | --unit-dir | --root | --release | --keep)
      [ $# -ge 2 ] && { [ "$value_given" = 1 ] || [[ "$2" != -* ]]; } || usage_error "$arg needs a value"
      case "$arg" in
        --role) add_roles "$2"; seen_rollback_conflict+=(--role) ;;
        --prefix) PREFIX=$(clean_path --prefix "$2") ;;
        --bin-dir) BIN_DIR=$(clean_path --bin-dir "$2") ;;
        --unit-dir) UNIT_DIR=$(clean_path --unit-dir "$2") ;;
        --root) [ -n "$2" ] || usage_error "--root needs a value"; ROOT=$2 ;;
        --release)
          [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || usage_error "--release must be letters, digits and ._+- (got '$2')"
          RELEASE_NAME=$2; seen_rollback_conflict+=(--release) ;;
        --keep)
          [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 2 ] || usage_error "--keep must be a number, at least 2 (current and previous)"
          KEEP=$2 ;;
      esac
      shift 2
      ;;
    --watchdog | --build | --no-enable | --now | --rollback | -h | --help)
      [ "$value_given" = 0 ] || usage_error "$arg takes no value"
      case "$arg" in
        --watchdog) WATCHDOG=1; seen_rollback_conflict+=(--watchdog) ;;
        --build) BUILD=1; seen_rollback_conflict+=(--build) ;;
        --no-enable) ENABLE=0 ;;
        --now) NOW=1 ;;
        --rollback) ROLLBACK=1 ;;
        -h | --help) usage; exit 0 ;;
      esac
      shift
      ;;
    -*) usage_error "unknown option: $arg" ;;
    *) usage_error "unexpected argument: '$arg' (roles go after --role)" ;;
  esac
done
if [ "$ROLLBACK" = 1 ] && [ "${#seen_rollback_conflict[@]}" -gt 0 ]; then
  usage_error "--rollback takes none of ${seen_rollback_conflict[*]}: it switches back to the previous release and its units"
fi
if [ "$WATCHDOG" = 1 ] && ! has_role agent; then usage_error "--watchdog is for --role agent"; fi

if [ -n "$ROOT" ]; then
  ROOT=$(realpath -m -- "$ROOT")
  [ "$ROOT" != / ] || ROOT=""
fi
R() { printf '%s%s' "$ROOT" "$1"; } # a target path, under --root when given
P=$(R "$PREFIX")

# ---- helpers -----------------------------------------------------------------------------------
# Owner and mode of a path we made. Under --root ownership is only printed (the berth user may not
# exist there, and the scratch root is the caller's); root:root is what root's files are anyway.
set_owner_mode() { # OWNER:GROUP MODE PATH
  chmod "$2" "$3"
  if [ -n "$ROOT" ]; then
    [ "$1" = root:root ] || would "chown $1 ${3#"$ROOT"}"
  else
    chown "$1" "$3"
  fi
}
mode_of() { stat -c '%a' "$1"; }
owner_of() { stat -c '%U:%G' "$1"; }

systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
# Runs a systemctl command, or says it would under --root.
sysctl_run() {
  if [ -n "$ROOT" ]; then
    would "systemctl $*"
  elif ! command -v systemctl >/dev/null 2>&1; then
    warn "no systemctl on this machine: not run: systemctl $*"
  elif [ "$1" != enable ] && [ ! -d /run/systemd/system ]; then
    warn "systemd is not running here: not run: systemctl $*"
  else
    info "systemctl $*"
    local last=${*: -1}
    systemctl "$@" || die "systemctl $* failed$([[ "$last" == *.service ]] && echo " (systemctl status $last; journalctl -u $last)")"
  fi
}

# ---- Node.js -----------------------------------------------------------------------------------
node_ok() { # NODE_BINARY: exit 0 when it is >= 20.11
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 11) ? 0 : 1)' 2>/dev/null
}
check_node() {
  step "checking Node.js (>= 20.11)"
  local node sys_node
  node=$(command -v node || true)
  [ -n "$node" ] || die "node is not on PATH: Berth needs Node.js >= 20.11. Debian 13: apt-get install nodejs (20.19); Debian 12's nodejs is 18, too old: install Node.js 20 or 22 from nodejs.org or NodeSource, then run this again"
  node_ok "$node" || die "Node.js >= 20.11 is required; $node is $("$node" --version 2>/dev/null || echo 'unknown'). Install Node.js 20 or 22 (nodejs.org or NodeSource), then run this again"
  info "node $("$node" --version) ($node)"
  # The units run `/usr/bin/env node` with systemd's PATH, not this shell's.
  if [ -z "$ROOT" ] && { has_role controller || has_role agent; }; then
    sys_node=$(PATH=$SYSTEMD_PATH command -v node || true)
    if [ -z "$sys_node" ]; then
      warn "the units run node from systemd's PATH ($SYSTEMD_PATH), where there is none: link it, e.g. ln -s $node /usr/local/bin/node"
    elif ! node_ok "$sys_node"; then
      warn "the units would run $sys_node ($("$sys_node" --version)), older than 20.11: put Node.js >= 20.11 first on $SYSTEMD_PATH"
    fi
  fi
}

# ---- what is being installed --------------------------------------------------------------------
json_field() { node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[process.argv[2]]' "$1" "$2"; }
release_field() { sed -n "s/^$1=//p" "$2" | head -n 1; }

FROM_RELEASE=0 # 1: this script runs from an installed release (no checkout around it)
PACKAGES=()
detect_source() {
  [ -f "$SRC/package.json" ] && [ -f "$SRC/package-lock.json" ] && [ -d "$SRC/packages" ] \
    || die "$SRC is not a Berth checkout (no package.json, package-lock.json and packages/): run deploy/install.sh from one"
  [ -f "$SRC/RELEASE" ] && [ ! -d "$SRC/.git" ] && FROM_RELEASE=1
  local p
  while IFS= read -r p; do PACKAGES+=("${p#packages/}"); done < <(node -e '
    const ws = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).workspaces ?? [];
    for (const w of ws) console.log(w);' "$SRC/package.json")
  [ "${#PACKAGES[@]}" -gt 0 ] || die "$SRC/package.json names no workspaces"
}

missing_dist() {
  local p c missing=()
  for p in "${PACKAGES[@]}"; do [ -f "$SRC/packages/$p/dist/index.js" ] || missing+=("packages/$p/dist"); done
  for c in "${COMMANDS[@]}"; do [ -f "$SRC/${ENTRY[$c]}" ] || missing+=("${ENTRY[$c]}"); done
  printf '%s\n' "${missing[@]+"${missing[@]}"}" | sort -u | grep . || true
}

build_if_needed() {
  local missing
  missing=$(missing_dist)
  if [ "$FROM_RELEASE" = 1 ]; then
    [ -z "$missing" ] || die "this release is incomplete (missing: $(echo $missing)): install from a checkout"
    return 0
  fi
  if [ -z "$missing" ] && [ "$BUILD" = 0 ]; then
    local p stale=()
    for p in "${PACKAGES[@]}"; do
      [ -f "$SRC/packages/$p/dist/.tsbuildinfo" ] || continue
      if [ -n "$(find "$SRC/packages/$p/src" -name '*.ts' -newer "$SRC/packages/$p/dist/.tsbuildinfo" -print -quit 2>/dev/null)" ]; then stale+=("$p"); fi
    done
    [ "${#stale[@]}" -eq 0 ] || warn "sources changed since the last build (${stale[*]}): installing the built dist/ as it is; --build (or npm run build) to rebuild"
    return 0
  fi
  if [ -n "$missing" ]; then
    step "building: dist/ is missing ($(echo $missing))"
  else
    step "building (--build)"
  fi
  command -v npm >/dev/null 2>&1 || die "npm is not on PATH: build the checkout elsewhere (npm ci && npm run build) or install npm"
  if [ ! -d "$SRC/node_modules/typescript" ]; then
    info "node_modules is missing: running npm ci && npm run build in $SRC (npm ci needs the registry or its cache)"
    (cd "$SRC" && npm ci --no-audit --no-fund && npm run build) || die "the build failed (npm ci && npm run build in $SRC)"
  else
    info "running npm run build in $SRC (node_modules is there: no npm ci)"
    (cd "$SRC" && npm run build) || die "the build failed (npm run build in $SRC)"
  fi
  missing=$(missing_dist)
  [ -z "$missing" ] || die "built, but still missing: $(echo $missing)"
}

GIT_COMMIT=""
GIT_DIRTY=0
read_git() {
  [ "$FROM_RELEASE" = 0 ] && command -v git >/dev/null 2>&1 && [ -e "$SRC/.git" ] || return 0
  # safe.directory: root installing from someone else's checkout.
  GIT_COMMIT=$(git -c safe.directory="$SRC" -C "$SRC" rev-parse --short=7 HEAD 2>/dev/null || true)
  [ -n "$GIT_COMMIT" ] || return 0
  if [ -n "$(git -c safe.directory="$SRC" -C "$SRC" status --porcelain -- packages package.json package-lock.json deploy 2>/dev/null)" ]; then
    GIT_DIRTY=1
  fi
}

# ---- the release -------------------------------------------------------------------------------
STAGE=""
cleanup() { if [ -n "$STAGE" ] && [ -d "$STAGE" ]; then rm -rf "$STAGE"; fi; }
trap cleanup EXIT

# Copies the production node_modules named by the lockfile (entries not marked dev), each package
# without its own node_modules/ (nested entries are copied as their own), the workspace links made
# again inside the release. Every package must be there at the lockfile's version.
COPY_NODE_MODULES='
const { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync } = require("node:fs");
const { dirname, join, relative } = require("node:path");
const [src, dst] = process.argv.slice(1);
const lock = JSON.parse(readFileSync(join(src, "package-lock.json"), "utf8"));
const entries = Object.entries(lock.packages ?? {}).filter(([k, v]) => k.startsWith("node_modules/") && !v.dev);
entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
const problems = [], absent = [];
let copied = 0, links = 0;
for (const [key, entry] of entries) {
  const from = join(src, key), to = join(dst, key);
  mkdirSync(dirname(to), { recursive: true });
  if (entry.link) {
    symlinkSync(relative(dirname(to), join(dst, entry.resolved)), to);
    links++;
    continue;
  }
  if (!existsSync(join(from, "package.json"))) {
    if (entry.optional || entry.devOptional) absent.push(key);
    else problems.push(`${key} is missing`);
    continue;
  }
  const version = JSON.parse(readFileSync(join(from, "package.json"), "utf8")).version;
  if (entry.version && version !== entry.version) {
    problems.push(`${key} is ${version}, the lockfile says ${entry.version}`);
    continue;
  }
  const nested = join(from, "node_modules");
  cpSync(from, to, { recursive: true, verbatimSymlinks: true, filter: (p) => p !== nested });
  copied++;
}
if (problems.length > 0) {
  console.error(`node_modules does not match package-lock.json: ${problems.slice(0, 5).join("; ")}${problems.length > 5 ? `; and ${problems.length - 5} more` : ""}`);
  process.exit(3);
}
console.log(`${copied} production packages copied, ${links} workspace links${absent.length ? `, ${absent.length} optional packages absent` : ""}`);
'

# The runtime's files but node_modules, relative to DIR, NUL-separated: what a release holds from
# the checkout (node_modules apart) and what names a release by its content.
runtime_files() { # DIR
  local p f
  (
    cd "$1"
    for f in package.json package-lock.json LICENSE NOTICE deploy/install.sh docs/lab-guide.md; do [ ! -f "$f" ] || printf '%s\0' "$f"; done
    for f in deploy/*.env.example deploy/*.md deploy/systemd/*; do [ ! -f "$f" ] || printf '%s\0' "$f"; done
    for p in "${PACKAGES[@]}"; do
      printf '%s\0' "packages/$p/package.json"
      find "packages/$p/dist" -type f ! -name .tsbuildinfo -print0
      [ ! -d "packages/$p/bin" ] || find "packages/$p/bin" -type f -print0
    done
  )
}

tree_digest() { # DIR: 8 hex digits over runtime_files (the lockfile stands for node_modules)
  runtime_files "$1" | LC_ALL=C sort -z | (cd "$1" && xargs -0 sha256sum) | sha256sum | cut -c1-8
}

stage_release() { # DIR
  local s=$1 out
  [ -d "$SRC/node_modules" ] || die "$SRC/node_modules is missing: run npm ci in $SRC first"
  runtime_files "$SRC" | (cd "$SRC" && xargs -0 cp --parents -t "$s")
  out=$(node -e "$COPY_NODE_MODULES" "$SRC" "$s") || die "${out:-copying node_modules failed}: run npm ci in $SRC, then this again"
  info "$out"
  chmod -R u=rwX,go=rX "$s"
}

write_release_file() { # DIR NAME VERSION COMMIT
  {
    echo "name=$2"
    echo "version=$3"
    echo "commit=${4:-unknown}"
    echo "dirty=$([ "$GIT_DIRTY" = 1 ] && echo yes || echo no)"
    echo "source=$SRC"
    echo "installed=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "node=$(node --version)"
  } >"$1/RELEASE"
  chmod 0644 "$1/RELEASE"
}

NAME=""
install_release() {
  local version commit rel
  version=$(json_field "$SRC/packages/core/package.json" version)
  mkdir -p "$P/releases"
  if [ "$FROM_RELEASE" = 1 ]; then
    commit=$(release_field commit "$SRC/RELEASE")
    [ "$(release_field dirty "$SRC/RELEASE")" != yes ] || GIT_DIRTY=1
    NAME=${RELEASE_NAME:-$(release_field name "$SRC/RELEASE")}
    [ -n "$NAME" ] || die "$SRC/RELEASE names no release"
  else
    commit=$GIT_COMMIT
    NAME=$RELEASE_NAME
    if [ -z "$NAME" ] && [ -n "$commit" ] && [ "$GIT_DIRTY" = 0 ]; then NAME="$version-$commit"; fi
  fi
  if [ -z "$NAME" ]; then
    # Uncommitted changes (or no git): the release is named by its content.
    if [ -n "$commit" ]; then NAME="$version-$commit-dirty.$(tree_digest "$SRC")"; else NAME="$version-$(tree_digest "$SRC")"; fi
  fi
  rel="$P/releases/$NAME"
  if [ -d "$rel" ]; then
    step "release $NAME is already installed in $PREFIX/releases: reused"
    [ -z "$RELEASE_NAME" ] || info "(--release $NAME names an existing release: it is not copied again; pick a new name for new code)"
    return 0
  fi
  step "copying the runtime to $PREFIX/releases/$NAME (packages/*/dist, package.json files, production node_modules)"
  [ "$GIT_DIRTY" = 0 ] || info "the checkout has uncommitted changes: -dirty.HASH names the content"
  STAGE=$(mktemp -d "$P/releases/.staging.XXXXXX")
  stage_release "$STAGE"
  write_release_file "$STAGE" "$NAME" "$version" "$commit"
  [ -n "$ROOT" ] || chown -R root:root "$STAGE"
  mv -T "$STAGE" "$rel"
  STAGE=""
  info "installed $PREFIX/releases/$NAME ($(du -sh "$rel" | cut -f1))"
}

# Points PREFIX/current at releases/NAME (atomically: a new symlink renamed over the old), and
# PREFIX/previous at what current was.
SWITCHED=0
switch_current() { # NAME
  local cur
  cur=$(readlink "$P/current" 2>/dev/null || true)
  if [ -e "$P/current" ] && [ ! -L "$P/current" ]; then die "$PREFIX/current exists and is not a symlink: move it away"; fi
  if [ "$cur" = "releases/$1" ]; then
    step "$PREFIX/current is releases/$1 already"
    return 0
  fi
  step "switching $PREFIX/current to releases/$1"
  if [ -n "$cur" ]; then
    ln -sfn "$cur" "$P/.previous.new"
    mv -T "$P/.previous.new" "$P/previous"
    info "$PREFIX/previous is now $cur (deploy/install.sh --rollback goes back to it)"
  fi
  ln -sfn "releases/$1" "$P/.current.new"
  mv -T "$P/.current.new" "$P/current"
  SWITCHED=1
}

# Keeps KEEP releases: current and previous, then the newest others; removes the rest.
prune_releases() {
  local cur prev d base kept=0 candidates=()
  cur=$(readlink "$P/current" 2>/dev/null || true)
  prev=$(readlink "$P/previous" 2>/dev/null || true)
  while IFS= read -r d; do
    base=${d##*/}
    if [ "releases/$base" = "$cur" ] || [ "releases/$base" = "$prev" ]; then
      kept=$((kept + 1))
    else
      candidates+=("$d")
    fi
  done < <(find "$P/releases" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
  for d in "${candidates[@]+"${candidates[@]}"}"; do
    if [ "$kept" -lt "$KEEP" ]; then
      kept=$((kept + 1))
      continue
    fi
    rm -rf "$d"
    info "removed the old release ${d##*/} (--keep $KEEP)"
  done
}

# ---- commands on PATH ----------------------------------------------------------------------------
wrapper_path() { printf '%s/%s' "$(R "$BIN_DIR")" "$1"; }
check_bin_dir_free() {
  local c w
  for c in "${COMMANDS[@]}"; do
    w=$(wrapper_path "$c")
    if [ -e "$w" ] || [ -L "$w" ]; then
      grep -qs "$WRAPPER_MARK" "$w" \
        || die "$BIN_DIR/$c exists and is not Berth's wrapper ($(if [ -L "$w" ]; then echo "a symlink to $(readlink "$w")"; else echo "a file"; fi); the npm package named 'berth' is another project): remove it, or choose --bin-dir"
    fi
  done
}
install_wrappers() {
  step "installing the commands in $BIN_DIR: ${COMMANDS[*]}"
  local bin real_bin real_prefix rel c w tmp
  bin=$(R "$BIN_DIR")
  mkdir -p "$bin"
  # The wrapper finds the release relative to its own real location, so that an install made
  # under --root runs there as it will on the host.
  real_bin=$(realpath -m -- "$bin")
  real_prefix=$(realpath -m -- "$P")
  rel=$(realpath -m --relative-to="$real_bin" -- "$real_prefix")
  for c in "${COMMANDS[@]}"; do
    w="$bin/$c"
    tmp=$(mktemp "$bin/.$c.XXXXXX")
    cat >"$tmp" <<EOF
#!/bin/sh
# $c: $WRAPPER_MARK. Runs $PREFIX/current/${ENTRY[$c]} with
# the node on PATH (Node.js >= 20.11). The release is found relative to this file's real path.
self=\$(readlink -f -- "\$0") || exit 1
entry="\${self%/*}/$rel/current/${ENTRY[$c]}"
if ! command -v node >/dev/null 2>&1; then
  echo "$c: node is not on PATH (Berth needs Node.js >= 20.11)" >&2
  exit 127
fi
if [ ! -f "\$entry" ]; then
  echo "$c: \$entry is missing: reinstall with deploy/install.sh" >&2
  exit 1
fi
exec node "\$entry" "\$@"
EOF
    chmod 0755 "$tmp"
    if cmp -s "$tmp" "$w"; then
      rm -f "$tmp"
      info "$BIN_DIR/$c unchanged"
    else
      mv -f "$tmp" "$w"
      info "$BIN_DIR/$c -> $PREFIX/current/${ENTRY[$c]}"
    fi
  done
}

# ---- roles ---------------------------------------------------------------------------------------
make_dir() { # PATH OWNER MODE: creates it when missing; says what it found otherwise
  local d
  d=$(R "$1")
  if [ -d "$d" ]; then
    info "$1 exists ($(mode_of "$d") $(owner_of "$d")): kept"
    return 1
  fi
  mkdir -p "$d"
  set_owner_mode "$2" "$3" "$d"
  info "created $1 ($3 $2)"
}

ensure_user() {
  if [ -n "$ROOT" ]; then
    would "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin berth (if there is no user berth)"
  elif getent passwd berth >/dev/null; then
    info "user berth exists: kept"
  else
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin berth
    info "created the system user berth"
  fi
}

CONF_DIRS_DONE=0
setup_conf_dirs() { # once a run, for all the roles asked
  [ "$CONF_DIRS_DONE" = 0 ] || return 0
  CONF_DIRS_DONE=1
  make_dir "$CONF_DIR" root:root 0755 || true
  local tls
  tls=$(R "$CONF_DIR/tls")
  if has_role controller; then
    # The controller (user berth) reads its key through the group: root:berth, key 0640.
    if make_dir "$CONF_DIR/tls" root:berth 0750; then :; elif [ -z "$ROOT" ] && [ "$(stat -c %G "$tls")" != berth ]; then
      chgrp berth "$tls" && chmod 0750 "$tls"
      info "$CONF_DIR/tls: group berth and mode 0750 now (the controller reads its key through the group)"
    fi
    make_dir "$CONF_DIR/etcd" root:root 0700 || true
  else
    make_dir "$CONF_DIR/tls" root:root 0700 || true
  fi
  if [ -d "$tls" ] && [ $((8#$(mode_of "$tls") & 8#007)) -ne 0 ]; then
    warn "$CONF_DIR/tls is $(mode_of "$tls"): others can enter it; chmod o-rwx $CONF_DIR/tls"
  fi
}

install_env() { # ROLE
  local dst rel_example
  dst=$(R "$CONF_DIR/$1.env")
  rel_example="$PREFIX/current/deploy/$1.env.example"
  if [ -e "$dst" ]; then
    info "kept $CONF_DIR/$1.env (yours: never overwritten; this release's example is $rel_example)"
  else
    install -m 0600 "$P/current/deploy/$1.env.example" "$dst"
    set_owner_mode root:root 0600 "$dst"
    info "created $CONF_DIR/$1.env from the example: edit it before starting"
  fi
}

UNITS_CHANGED=0
# Writes a unit (or drop-in) from the current release's deploy/systemd, its paths under PREFIX;
# a file that differs is replaced and saved under /etc/berth/replaced/ first.
install_unit_file() { # SOURCE DEST_REL(to UNIT_DIR)
  local src=$1 dst_rel=$2 dst tmp saved
  dst="$(R "$UNIT_DIR")/$dst_rel"
  mkdir -p "$(dirname "$dst")"
  tmp=$(mktemp "$(dirname "$dst")/.berth-unit.XXXXXX")
  sed "s#/opt/berth/current/#$PREFIX/current/#g" "$src" >"$tmp"
  chmod 0644 "$tmp"
  if cmp -s "$tmp" "$dst"; then
    rm -f "$tmp"
    info "$UNIT_DIR/$dst_rel unchanged"
    return 0
  fi
  if [ -e "$dst" ]; then
    saved="$CONF_DIR/replaced/${dst_rel//\//_}.$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$(R "$CONF_DIR/replaced")"
    cp -p "$dst" "$(R "$saved")"
    info "$UNIT_DIR/$dst_rel updated (the old one saved as $saved; for changes of your own use a drop-in: systemctl edit)"
  else
    info "installed $UNIT_DIR/$dst_rel"
  fi
  mv -f "$tmp" "$dst"
  UNITS_CHANGED=1
}

role_units() { # ROLE: its unit names
  case "$1" in
    controller) echo berth-controller.service ;;
    agent) echo berth-agent.service ;;
  esac
}

install_role() { # ROLE
  local role=$1 unit
  case "$role" in
    cli)
      step "role cli: the berth command (nothing else to install)"
      return 0
      ;;
    controller) step "role controller" ;;
    agent) step "role agent" ;;
  esac
  [ "$role" != controller ] || ensure_user
  setup_conf_dirs
  install_env "$role"
  unit=$(role_units "$role")
  install_unit_file "$P/current/deploy/systemd/$unit" "$unit"
  if [ "$role" = agent ]; then
    local dropin="berth-agent.service.d/watchdog.conf"
    if [ "$WATCHDOG" = 1 ] || [ -e "$(R "$UNIT_DIR")/$dropin" ]; then
      install_unit_file "$P/current/deploy/systemd/berth-agent-watchdog.conf" "$dropin"
    fi
    if [ -z "$ROOT" ] && ! command -v virsh >/dev/null 2>&1; then
      warn "no virsh on this host: the libvirt driver needs libvirt-clients and libvirtd (deploy/libvirt-host.md)"
    fi
  fi
}

# daemon-reload, enable, and (with --now) restart the given units.
activate_units() { # UNITS...
  [ $# -gt 0 ] || return 0
  step "systemd"
  if [ "$UNITS_CHANGED" = 1 ]; then
    if [ -n "$ROOT" ] || systemd_running; then sysctl_run daemon-reload; else info "systemd is not running here: no daemon-reload"; fi
  fi
  local u
  if [ "$ENABLE" = 1 ] && [ "$ROLLBACK" = 0 ]; then
    for u in "$@"; do sysctl_run enable "$u"; done
  elif [ "$ROLLBACK" = 0 ]; then
    info "--no-enable: not enabled (systemctl enable $*)"
  fi
  if [ "$NOW" = 1 ]; then
    for u in "$@"; do sysctl_run restart "$u"; done
  else
    for u in "$@"; do
      if systemd_running && systemctl is-active --quiet "$u" && { [ "$SWITCHED" = 1 ] || [ "$UNITS_CHANGED" = 1 ]; }; then
        info "$u runs the release it was started with: systemctl restart $u to switch (controllers: followers first)"
      fi
    done
    info "not started (--now starts them)"
  fi
}

# ---- rollback ------------------------------------------------------------------------------------
do_rollback() {
  local cur prev u units=()
  [ -L "$P/current" ] || die "no release is installed in $PREFIX (no $PREFIX/current)"
  prev=$(readlink "$P/previous" 2>/dev/null || true)
  [ -n "$prev" ] || die "there is no previous release in $PREFIX (no $PREFIX/previous): nothing to roll back to"
  [ -d "$P/$prev" ] || die "$PREFIX/previous points at $prev, which is gone"
  cur=$(readlink "$P/current")
  step "rolling back: $PREFIX/current from $cur to $prev"
  ln -sfn "$cur" "$P/.previous.new"
  ln -sfn "$prev" "$P/.current.new"
  mv -T "$P/.current.new" "$P/current"
  mv -T "$P/.previous.new" "$P/previous"
  SWITCHED=1
  info "$PREFIX/previous is now $cur (--rollback again returns to it)"
  step "reinstalling the units of $prev"
  for u in berth-controller.service berth-agent.service; do
    if [ -e "$(R "$UNIT_DIR")/$u" ]; then
      install_unit_file "$P/current/deploy/systemd/$u" "$u"
      units+=("$u")
    fi
  done
  if [ -e "$(R "$UNIT_DIR")/berth-agent.service.d/watchdog.conf" ]; then
    install_unit_file "$P/current/deploy/systemd/berth-agent-watchdog.conf" berth-agent.service.d/watchdog.conf
  fi
  [ "${#units[@]}" -gt 0 ] || info "no Berth unit installed in $UNIT_DIR: only the commands changed"
  activate_units "${units[@]+"${units[@]}"}"
  echo
  echo "Rolled back to $prev."
  if [ "$NOW" = 0 ] && [ "${#units[@]}" -gt 0 ]; then
    echo "Restart to run it: systemctl restart ${units[*]} (controllers: followers first)."
  fi
}

# ---- next steps --------------------------------------------------------------------------------
next_steps() {
  local n=1
  echo
  echo "Installed Berth $NAME ($PREFIX/current), commands in $BIN_DIR."
  [ -z "$ROOT" ] || echo "(under --root $ROOT: nothing was run as root; the 'would run' lines above are what a real install does)"
  echo "Next steps (docs/lab-guide.md walks a whole lab; $PREFIX/current/deploy/README.md has the details):"
  if has_role controller || has_role agent; then
    echo "  $n. Certificates, on the admin's machine (it keeps ca.key): berth certs init --dir ~/berth-pki --san NAME,IP"
    echo "     then berth certs issue controller NAME --san ... / host HOST_ID / operator NAME --role admin."
    echo "     Copy ca.crt and this machine's certificate and key into $CONF_DIR/tls/ (deploy/README.md, \"Which file goes where\")."
    n=$((n + 1))
  fi
  if has_role controller; then
    echo "  $n. etcd's client files for the controller in $CONF_DIR/etcd/: ca.crt, client.crt, client.key, password (0600)."
    n=$((n + 1))
    echo "  $n. Edit $CONF_DIR/controller.env (BERTH_ADVERTISE, BERTH_ETCD, BERTH_ETCD_USER, the TLS files)."
    n=$((n + 1))
  fi
  if has_role agent; then
    echo "  $n. Prepare libvirt (deploy/libvirt-host.md) and edit $CONF_DIR/agent.env (BERTH_HOST_ID = the certificate's name, BERTH_CONTROLLER)."
    n=$((n + 1))
  fi
  if has_role controller || has_role agent; then
    local units=()
    has_role controller && units+=(berth-controller)
    has_role agent && units+=(berth-agent)
    if [ "$NOW" = 1 ] && systemd_running; then
      echo "  $n. Started: follow it with journalctl -u ${units[0]} -f"
    else
      echo "  $n. Start: systemctl start ${units[*]}; follow: journalctl -u ${units[0]} -f"
    fi
    n=$((n + 1))
  fi
  echo "  $n. Check, with an operator certificate: berth --controller HOST:7400 --tls-ca ca.crt --tls-cert alice.crt --tls-key alice.key host list"
}

# ---- main ----------------------------------------------------------------------------------------
main() {
  if [ -z "$ROOT" ]; then
    [ "$(id -u)" = 0 ] || die "run it as root (sudo $0 ...), or with --root DIR to install into a scratch directory"
    [ -f /etc/debian_version ] || warn "this is not Debian: the script is written for Debian (systemd, useradd); carrying on"
  else
    step "installing under --root $ROOT (no useradd, chown or systemctl: printed instead)"
  fi
  mkdir -p "$P"
  exec 9>"$P/.install.lock"
  flock -n 9 || die "another install.sh is running on $PREFIX (lock $PREFIX/.install.lock)"

  if [ "$ROLLBACK" = 1 ]; then
    check_bin_dir_free
    do_rollback
    return 0
  fi

  [ "${#ROLES[@]}" -gt 0 ] || info "no --role: the runtime and the commands only (like --role cli)"
  check_node
  detect_source
  check_bin_dir_free
  if [ -d "$P/packages" ] && [ ! -L "$P/current" ]; then
    warn "$PREFIX holds a copy of a checkout (the old by-hand install): it is left as it is; the units now run $PREFIX/current. Remove $PREFIX/packages and $PREFIX/node_modules once the new release runs"
  fi
  build_if_needed
  read_git
  install_release
  switch_current "$NAME"
  prune_releases
  install_wrappers

  local r units=()
  for r in controller agent cli; do
    has_role "$r" || continue
    install_role "$r"
    [ "$r" = cli ] || units+=("$(role_units "$r")")
  done
  activate_units "${units[@]+"${units[@]}"}"
  next_steps
}

main
