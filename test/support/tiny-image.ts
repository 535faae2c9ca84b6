// A tiny bootable guest for the suites that need a real VM: a qcow2 disk holding syslinux, a Debian
// kernel and a busybox initramfs whose /init reads a NoCloud seed, runs DHCP on the first NIC and
// leaves a shell on the serial console. Built here from Debian packages; nothing is downloaded.
//
// Where the kernel comes from, first match wins:
//   1. `options.kernelDeb`: a linux-image-*.deb file.
//   2. `.ci/cache/kernel/linux-image-*.deb` in this repository (gitignored), put there by
//      test/support/tiny-image-kernel.sh, which .ci/run calls (`apt-get download` of the package
//      linux-image-cloud-amd64 depends on). The deb is unpacked with `dpkg-deb -x` at build time.
//   3. The newest `/boot/vmlinuz-<version>` whose `/lib/modules/<version>/modules.dep` exists (a
//      Debian or Ubuntu machine with a kernel installed), if it has the drivers listed below.
// The built image is cached under os.tmpdir()/berth-tiny-image/<key>/, the key hashing every input
// (kernel file, busybox binary, syslinux version, the generated /init), so a changed input builds a
// new image and an unchanged one is reused by every process.
//
// Booting it under libvirt, as measured on the 2-core CI machine (banner 5-8 s, address 7-12 s):
//   - Domain type `qemu` (TCG). On this kind of machine /dev/kvm exists and `virsh domcapabilities
//     --virttype kvm` answers, yet every KVM guest dies in SeaBIOS ("KVM internal error ...
//     emulation failure") and is left paused: a suite that boots this image must not trust that probe.
//   - The seed CD-ROM on the IDE bus (machine `pc`): the cloud kernel has no AHCI, so a SATA CD-ROM
//     is not seen. virtio-scsi also works.
//   - QEMU drops serial output while nobody holds the pty: start paused, open the console, resume
//     (or read a serial log file) to see the banner. Open the pty with O_RDWR | O_NOCTTY (never
//     'r+': a process without a controlling terminal would acquire it and get SIGHUP at shutdown),
//     then tty.ReadStream + setRawMode(true). Write only after TINY_IMAGE_READY and its prompt.
//   - libvirt's NAT network needs dnsmasq-base and iptables installed before libvirtd starts.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

/** Printed on the serial console (ttyS0) as soon as /init runs: the kernel booted. */
export const TINY_IMAGE_BANNER = "berth-tiny-image booted";
/**
 * Printed by the console shell just before its first prompt (and again whenever it is restarted):
 * from here on, bytes written to the console are read by a shell (`echo x` prints `x` back).
 */
export const TINY_IMAGE_READY = "berth-tiny-image ready";
/** `hostname: <local-hostname>` from the seed's meta-data (empty after the colon if it has none). */
export const TINY_IMAGE_HOSTNAME_PREFIX = "hostname: ";
/** `instance-id: <instance-id>` from the seed's meta-data. */
export const TINY_IMAGE_INSTANCE_ID_PREFIX = "instance-id: ";
/**
 * `ssh keys: N`: how many distinct public keys (type and base64 blob) the seed's meta-data
 * (`public-keys`) and user-data (`ssh_authorized_keys`, also under `users:`) hold together.
 */
export const TINY_IMAGE_SSH_KEYS_PREFIX = "ssh keys: ";
/** `seed: <device>` when a NoCloud seed (iso9660 with meta-data) was found, else `seed: none`. */
export const TINY_IMAGE_SEED_PREFIX = "seed: ";
/**
 * `address: <ipv4>` once the DHCP client on the first NIC (eth0) got a lease; `address: none`
 * when the guest has no NIC. Without a lease after about 15 s the guest goes on (the client keeps
 * trying in the background and prints the line when it gets one).
 */
export const TINY_IMAGE_ADDRESS_PREFIX = "address: ";
/** The hostname the guest uses (and sends in its DHCP request) when the seed names none. */
export const TINY_IMAGE_DEFAULT_HOSTNAME = "berth-tiny";

/** The built image: a qcow2 file to use as a backing file (never written to by the suites). */
export interface TinyImage {
  path: string;
  format: "qcow2";
  virtualSizeBytes: number;
}

export interface TinyImageOptions {
  /** A linux-image-*.deb to take the kernel from (see the lookup order at the top of this file). */
  kernelDeb?: string;
  /** Where built images are kept; os.tmpdir()/berth-tiny-image by default. */
  cacheDir?: string;
}

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Where test/support/tiny-image-kernel.sh puts the kernel package. */
export const KERNEL_CACHE_DIR = join(REPO_ROOT, ".ci", "cache", "kernel");
const KERNEL_SCRIPT = "test/support/tiny-image-kernel.sh";
/** Bumped when the layout of the image changes in a way the inputs' hash does not see. */
const FORMAT_VERSION = "1";

/**
 * Drivers the guest loads, with what they need, in this order. The CD-ROM can be on IDE (the
 * default `pc` machine: ata_piix), virtio-scsi, or virtio-blk; SATA (AHCI, the q35 machine's
 * CD-ROM bus) only where the kernel has ahci (Debian's cloud kernel does not). Serial (8250),
 * af_packet and initramfs support are built into every kernel this takes.
 */
const REQUIRED_MODULES = ["virtio_pci", "virtio_net", "sr_mod", "isofs"] as const;
const OPTIONAL_MODULES = ["virtio_blk", "virtio_scsi", "ata_piix", "ata_generic", "ahci", "button", "evdev"] as const;

// ---- the guest's files ------------------------------------------------------------------------

// /init, PID 1. Prints each line tests match on by itself, so a test can wait for it.
const INIT = String.raw`#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "${TINY_IMAGE_BANNER}"
while read -r m; do
  insmod "/lib/modules/$m" 2>/dev/null || echo "tiny-image: insmod $m failed"
done < /etc/modules.order
hostname "${TINY_IMAGE_DEFAULT_HOSTNAME}"
# The CD-ROM shows up a little after its driver loads (SCSI scans asynchronously): look for up to 5 s.
seed=""
tries=0
while [ -z "$seed" ] && [ $tries -lt 25 ]; do
  for dev in /dev/sr* /dev/vd* /dev/sd* /dev/hd*; do
    [ -b "$dev" ] || continue
    if mount -t iso9660 -o ro "$dev" /seed 2>/dev/null; then
      if [ -f /seed/meta-data ]; then seed="$dev"; break; fi
      umount /seed
    fi
  done
  [ -n "$seed" ] || { sleep 0.2; tries=$((tries + 1)); }
done
if [ -n "$seed" ]; then
  echo "${TINY_IMAGE_SEED_PREFIX}$seed"
  # meta-data is YAML or JSON: the first value of the key, unquoted.
  value() { sed -nE "s/.*\"?$1\"?[[:space:]]*:[[:space:]]*[\"']?([^\"',}[:space:]]*).*/\1/p" /seed/meta-data | head -n 1; }
  iid=$(value instance-id)
  name=$(value local-hostname)
  [ -n "$name" ] && hostname "$name"
  echo "${TINY_IMAGE_INSTANCE_ID_PREFIX}$iid"
  echo "${TINY_IMAGE_HOSTNAME_PREFIX}$name"
  mkdir -p /root/.ssh
  cat /seed/meta-data /seed/user-data 2>/dev/null \
    | grep -oE '(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+=*' \
    | sort -u > /root/.ssh/authorized_keys
  echo "${TINY_IMAGE_SSH_KEYS_PREFIX}$(wc -l < /root/.ssh/authorized_keys)"
else
  echo "${TINY_IMAGE_SEED_PREFIX}none"
fi
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  # Waits for a lease up to 15 tries a second apart, then keeps trying in the background; once
  # bound it daemonizes and renews. The hostname goes into the request (dnsmasq's lease shows it).
  udhcpc -i eth0 -s /etc/udhcpc.script -t 15 -T 1 -A 1 -b -x "hostname:$(hostname)" >/dev/null 2>&1
else
  echo "${TINY_IMAGE_ADDRESS_PREFIX}none"
fi
# ACPI power button (virsh shutdown): power off at once.
[ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /dev/null
export ENV=/etc/shellrc
while true; do setsid cttyhack sh -i; done
`;

// udhcpc calls this with the lease in its environment ($ip, $mask as a prefix length, $router).
const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    [ "$1" = bound ] && echo "${TINY_IMAGE_ADDRESS_PREFIX}$ip" > /dev/console
    ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
`;

// busybox acpid runs <confdir>/PWRF/00000080 on a power button press.
const POWER_BUTTON = `#!/bin/sh
echo "berth-tiny-image powering off" > /dev/console
poweroff -f
`;

// Read by the interactive shell before its first prompt: the guest is ready for input.
const SHELLRC = `echo "${TINY_IMAGE_READY}"\n`;

// `quiet`: the kernel's boot messages over an emulated 115200 baud UART cost seconds under TCG.
const SYSLINUX_CFG = `SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0,115200 quiet
`;

// ---- tools ------------------------------------------------------------------------------------

/** Each tool the build runs, with the Debian package that has it. */
const TOOLS = {
  busybox: "busybox-static",
  cpio: "cpio",
  mformat: "mtools",
  mcopy: "mtools",
  syslinux: "syslinux",
  "qemu-img": "qemu-utils",
} as const;

function which(binary: string): string | undefined {
  for (const dir of (process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin").split(delimiter)) {
    const path = join(dir, binary);
    try {
      if (statSync(path).isFile()) {
        accessSync(path, constants.X_OK);
        return path;
      }
    } catch {
      // not in this directory, or not executable
    }
  }
  return undefined;
}

/** Whether the ELF file at `path` is statically linked (has no PT_INTERP program header). */
function isStaticElf(path: string): boolean {
  const buf = readFileSync(path);
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2) return false;
  const phoff = Number(buf.readBigUInt64LE(32));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) if (buf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

function toolsMissing(): string | undefined {
  for (const [tool, pkg] of Object.entries(TOOLS)) if (!which(tool)) return `${tool} is not installed (install the Debian package ${pkg})`;
  if (!isStaticElf(which("busybox")!)) return "busybox is dynamically linked (install the Debian package busybox-static)";
  return undefined;
}

interface Run {
  stdout: Buffer;
}

function run(file: string, args: readonly string[], options: { cwd?: string; input?: string | Buffer } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { cwd: options.cwd, encoding: "buffer", maxBuffer: 256 * 1024 * 1024, timeout: 120_000, env: { ...process.env, LC_ALL: "C", MTOOLS_SKIP_CHECK: "1" } },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${file} ${args.join(" ")}: ${String(stderr).trim() || error.message}`));
        else resolve({ stdout });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

// ---- the kernel -------------------------------------------------------------------------------

/** Where the kernel is taken from: a deb to unpack, or an installed kernel and its module tree. */
type KernelSource = { kind: "deb"; deb: string } | { kind: "installed"; version: string; vmlinuz: string; modulesDir: string };

function newestFirst(names: string[]): string[] {
  return [...names].sort((a, b) => b.localeCompare(a, "en", { numeric: true }));
}

function findKernel(options: TinyImageOptions): KernelSource | { skip: string } {
  if (options.kernelDeb) return existsSync(options.kernelDeb) ? { kind: "deb", deb: options.kernelDeb } : { skip: `kernel package ${options.kernelDeb} does not exist` };
  if (existsSync(KERNEL_CACHE_DIR)) {
    const debs = newestFirst(readdirSync(KERNEL_CACHE_DIR).filter((f) => /^linux-image-.*\.deb$/.test(f)));
    if (debs[0]) return { kind: "deb", deb: join(KERNEL_CACHE_DIR, debs[0]) };
  }
  if (existsSync("/boot")) {
    for (const f of newestFirst(readdirSync("/boot").filter((n) => n.startsWith("vmlinuz-")))) {
      const version = f.slice("vmlinuz-".length);
      const modulesDir = join("/lib/modules", version);
      if (existsSync(join(modulesDir, "modules.dep"))) return { kind: "installed", version, vmlinuz: join("/boot", f), modulesDir };
    }
  }
  return { skip: `no kernel for the tiny guest image: run ${KERNEL_SCRIPT} (it puts Debian's linux-image-cloud-amd64 package into .ci/cache/kernel/), or install a kernel in /boot` };
}

/** A kernel ready to use: its bzImage and a module tree with modules.dep and modules.builtin. */
interface Kernel {
  version: string;
  vmlinuz: string;
  modulesDir: string;
}

async function unpackKernel(source: KernelSource, into: string): Promise<Kernel> {
  if (source.kind === "installed") return source;
  const root = join(into, "kernel-root");
  await run("dpkg-deb", ["-x", source.deb, root]);
  const versions = existsSync(join(root, "lib/modules")) ? readdirSync(join(root, "lib/modules")) : [];
  const version = versions.find((v) => existsSync(join(root, "boot", `vmlinuz-${v}`)));
  if (!version) throw new Error(`${source.deb} holds no boot/vmlinuz-<version> with lib/modules/<version>`);
  const modulesDir = join(root, "lib/modules", version);
  // A kernel package ships no modules.dep (its postinst runs depmod); busybox's depmod writes one.
  if (!existsSync(join(modulesDir, "modules.dep"))) await run(which("busybox")!, ["depmod", "-b", root, version]);
  return { version, vmlinuz: join(root, "boot", `vmlinuz-${version}`), modulesDir };
}

/**
 * The modules to load, dependencies first (paths relative to the module tree), from modules.dep.
 * Throws naming a required driver that is neither built in nor a module.
 */
export function moduleLoadOrder(modulesDep: string, modulesBuiltin: string, required: readonly string[], optional: readonly string[]): string[] {
  const moduleName = (path: string): string => basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, "").replace(/-/g, "_");
  const deps = new Map<string, string[]>();
  for (const line of modulesDep.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) deps.set(line.slice(0, colon), line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map([...deps.keys()].map((path) => [moduleName(path), path]));
  const builtin = new Set(modulesBuiltin.split("\n").filter(Boolean).map(moduleName));
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (path: string): void => {
    if (seen.has(path)) return;
    seen.add(path);
    for (const dep of deps.get(path) ?? []) visit(dep);
    order.push(path);
  };
  for (const name of [...required, ...optional]) {
    const path = byName.get(name);
    if (path) visit(path);
    else if (!builtin.has(name) && required.includes(name)) throw new Error(`the kernel has no ${name} driver (neither built in nor a module)`);
  }
  return order;
}

/** Copies a module into the initramfs, uncompressed (busybox's insmod takes plain .ko files). */
async function copyModule(from: string, to: string): Promise<void> {
  mkdirSync(dirname(to), { recursive: true });
  if (from.endsWith(".ko")) return copyFileSync(from, to);
  const tool = from.endsWith(".xz") ? "xz" : from.endsWith(".zst") ? "zstd" : "gzip";
  writeFileSync(to, (await run(tool, ["-dc", from])).stdout);
}

// ---- building ---------------------------------------------------------------------------------

function hashFile(hash: ReturnType<typeof createHash>, path: string): void {
  const fd = openSync(path, "r");
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let n; (n = readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hash.update(chunk.subarray(0, n));
  } finally {
    closeSync(fd);
  }
}

async function cacheKey(source: KernelSource): Promise<string> {
  const hash = createHash("sha256");
  hash.update(`format ${FORMAT_VERSION}\n`);
  if (source.kind === "deb") hashFile(hash, source.deb);
  else {
    hashFile(hash, source.vmlinuz);
    hash.update(readFileSync(join(source.modulesDir, "modules.dep")));
  }
  hashFile(hash, which("busybox")!);
  hash.update((await run("syslinux", ["--version"]).catch(() => ({ stdout: Buffer.from("?") }))).stdout);
  for (const text of [INIT, UDHCPC_SCRIPT, POWER_BUTTON, SHELLRC, SYSLINUX_CFG, REQUIRED_MODULES.join(","), OPTIONAL_MODULES.join(",")]) hash.update(text);
  return hash.digest("hex").slice(0, 16);
}

function listTree(root: string, dir = ""): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const rel = dir ? `${dir}/${entry.name}` : entry.name;
    out.push(rel);
    if (entry.isDirectory()) out.push(...listTree(root, rel));
  }
  return out;
}

async function buildInitramfs(kernel: Kernel, work: string): Promise<Buffer> {
  const root = join(work, "initramfs");
  for (const d of ["bin", "dev", "proc", "sys", "seed", "tmp", "root", "etc/acpi/PWRF", "lib/modules"]) mkdirSync(join(root, d), { recursive: true });
  const busybox = which("busybox")!;
  copyFileSync(busybox, join(root, "bin/busybox"));
  chmodSync(join(root, "bin/busybox"), 0o755);
  const applets = String((await run(busybox, ["--list"])).stdout).split("\n").filter((a) => a && a !== "busybox" && !a.includes("/"));
  for (const applet of applets) symlinkSync("busybox", join(root, "bin", applet));
  const files: [string, string][] = [["init", INIT], ["etc/udhcpc.script", UDHCPC_SCRIPT], ["etc/acpi/PWRF/00000080", POWER_BUTTON], ["etc/shellrc", SHELLRC]];
  for (const [path, text] of files) writeFileSync(join(root, path), text, { mode: 0o755 });
  const builtin = existsSync(join(kernel.modulesDir, "modules.builtin")) ? readFileSync(join(kernel.modulesDir, "modules.builtin"), "utf8") : "";
  const order = moduleLoadOrder(readFileSync(join(kernel.modulesDir, "modules.dep"), "utf8"), builtin, REQUIRED_MODULES, OPTIONAL_MODULES);
  const plain = order.map((m) => m.replace(/\.ko\.(xz|zst|gz)$/, ".ko"));
  for (const [i, m] of order.entries()) await copyModule(join(kernel.modulesDir, m), join(root, "lib/modules", plain[i]!));
  writeFileSync(join(root, "etc/modules.order"), plain.map((m) => `${m}\n`).join(""));
  // The real cpio in newc format (what the kernel unpacks), every file owned by root.
  const names = listTree(root).sort();
  const cpio = await run("cpio", ["-o", "-H", "newc", "-R", "0:0", "--quiet"], { cwd: root, input: names.join("\n") + "\n" });
  return gzipSync(cpio.stdout, { level: 9 });
}

async function buildDisk(kernel: Kernel, initrd: Buffer, work: string): Promise<string> {
  const MiB = 1024 * 1024;
  const initrdPath = join(work, "initrd.gz");
  writeFileSync(initrdPath, initrd);
  writeFileSync(join(work, "syslinux.cfg"), SYSLINUX_CFG);
  // A whole-disk FAT filesystem (no partition table): SeaBIOS boots its boot sector as it would a
  // superfloppy's, and syslinux installs into it without mounting anything.
  const sizeMiB = Math.max(16, Math.ceil((statSync(kernel.vmlinuz).size + initrd.length) / MiB) + 4);
  const raw = join(work, "disk.raw");
  const fd = openSync(raw, "w");
  try {
    ftruncateSync(fd, sizeMiB * MiB);
  } finally {
    closeSync(fd);
  }
  // 64 heads x 32 sectors: one cylinder per MiB, so any whole number of MiB is a valid geometry.
  await run("mformat", ["-i", raw, "-T", String(sizeMiB * 2048), "-h", "64", "-s", "32", "-v", "BERTHTINY", "::"]);
  await run("mcopy", ["-i", raw, kernel.vmlinuz, "::vmlinuz"]);
  await run("mcopy", ["-i", raw, initrdPath, "::initrd.gz"]);
  await run("mcopy", ["-i", raw, join(work, "syslinux.cfg"), "::syslinux.cfg"]);
  await run("syslinux", ["--install", raw]);
  const qcow2 = join(work, "tiny.qcow2");
  await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, qcow2]);
  rmSync(raw);
  return qcow2;
}

async function virtualSize(path: string): Promise<number> {
  const info = JSON.parse(String((await run("qemu-img", ["info", "--output=json", "-U", path])).stdout)) as { "virtual-size": number };
  return info["virtual-size"];
}

/**
 * Why {@link buildTinyImage} would skip (a tool or the kernel is missing), or undefined when it can
 * build. Checks without building, for `describeRequiring`.
 */
export function tinyImageMissing(options: TinyImageOptions = {}): string | undefined {
  const tools = toolsMissing();
  if (tools) return tools;
  const kernel = findKernel(options);
  if ("skip" in kernel) return kernel.skip;
  if (kernel.kind === "deb" && !which("dpkg-deb")) return "dpkg-deb is not installed (install the Debian package dpkg)";
  return undefined;
}

const builds = new Map<string, Promise<TinyImage | { skip: string }>>();

/**
 * Builds the tiny guest image (or finds it already built) and resolves its path: a qcow2 disk of a
 * few tens of MiB that boots under TCG in seconds. On its serial console (ttyS0, 115200) it prints
 * {@link TINY_IMAGE_BANNER}, then the seed lines (`seed:`, `instance-id:`, `hostname:`,
 * `ssh keys:`) from a NoCloud seed on any CD-ROM or disk (iso9660 holding meta-data, normally
 * labelled cidata), `address: <ip>` from DHCP on its first NIC (virtio-net), and
 * {@link TINY_IMAGE_READY} when a shell reads the console. An ACPI power button press (virsh
 * shutdown) powers it off. Use it as a read-only backing file: a boot must write to an overlay.
 *
 * Built once per process per cache dir; across processes the cache directory is shared, each image
 * built under a temporary name and renamed into place complete, so a reader never sees half of
 * one. Resolves `{ skip }` naming the missing package when a tool or the kernel is missing; rejects
 * when a build step fails.
 */
export function buildTinyImage(options: TinyImageOptions = {}): Promise<TinyImage | { skip: string }> {
  const cacheDir = options.cacheDir ?? join(tmpdir(), "berth-tiny-image");
  const memoKey = `${cacheDir}\0${options.kernelDeb ?? ""}`;
  let build = builds.get(memoKey);
  if (!build) {
    build = doBuild(cacheDir, options);
    builds.set(memoKey, build);
    // A failed build is not remembered: the next caller tries again.
    build.catch(() => builds.delete(memoKey));
  }
  return build;
}

async function doBuild(cacheDir: string, options: TinyImageOptions): Promise<TinyImage | { skip: string }> {
  const missing = toolsMissing();
  if (missing) return { skip: missing };
  const source = findKernel(options);
  if ("skip" in source) return source;
  if (source.kind === "deb" && !which("dpkg-deb")) return { skip: "dpkg-deb is not installed (install the Debian package dpkg)" };
  const key = await cacheKey(source);
  const final = join(cacheDir, key);
  const image = join(final, "tiny.qcow2");
  if (existsSync(image)) return { path: image, format: "qcow2", virtualSizeBytes: await virtualSize(image) };
  // World-readable: libvirt runs qemu as its own user, which must open the image as a backing file.
  mkdirSync(cacheDir, { recursive: true });
  chmodSync(cacheDir, 0o755);
  const work = join(cacheDir, `.${key}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  mkdirSync(work, { mode: 0o755 });
  try {
    const kernel = await unpackKernel(source, work);
    const initrd = await buildInitramfs(kernel, work);
    const qcow2 = await buildDisk(kernel, initrd, work);
    const done = join(cacheDir, `.${key}.done-${process.pid}-${randomBytes(4).toString("hex")}`);
    mkdirSync(done, { mode: 0o755 });
    renameSync(qcow2, join(done, "tiny.qcow2"));
    chmodSync(join(done, "tiny.qcow2"), 0o644);
    try {
      renameSync(done, final);
    } catch (e) {
      // Another process renamed its complete build into place first: use that one.
      rmSync(done, { recursive: true, force: true });
      if (!existsSync(image)) throw e;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { path: image, format: "qcow2", virtualSizeBytes: await virtualSize(image) };
}

/**
 * Writes a NoCloud seed ISO (`<dir>/seed.iso`, iso9660 with Joliet and Rock Ridge, volume label
 * `cidata`, files `meta-data` and `user-data`) with genisoimage and resolves its path. Test-only:
 * the product writes its own seeds. Rejects when genisoimage is missing or fails.
 */
export async function buildSeedIso(dir: string, seed: { metaData: string; userData: string }): Promise<string> {
  const files = join(dir, "seed-files");
  mkdirSync(files, { recursive: true });
  writeFileSync(join(files, "meta-data"), seed.metaData);
  writeFileSync(join(files, "user-data"), seed.userData);
  const iso = join(dir, "seed.iso");
  await run("genisoimage", ["-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock", join(files, "meta-data"), join(files, "user-data")]);
  return iso;
}

/** What the guest said on its console, parsed from the lines above (undefined: not printed yet). */
export interface TinyImageConsole {
  booted: boolean;
  ready: boolean;
  seed?: string;
  instanceId?: string;
  hostname?: string;
  sshKeys?: number;
  address?: string;
}

/** Parses the guest's console output (any line endings, escape sequences in between are fine). */
export function parseTinyImageConsole(output: string): TinyImageConsole {
  const line = (prefix: string): string | undefined => {
    const m = new RegExp(`(?:^|[\\r\\n])${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}([^\\r\\n]*)\\r?\\n`).exec(output);
    return m ? m[1]!.trim() : undefined;
  };
  const keys = line(TINY_IMAGE_SSH_KEYS_PREFIX);
  return {
    booted: output.includes(TINY_IMAGE_BANNER),
    ready: output.includes(TINY_IMAGE_READY),
    seed: line(TINY_IMAGE_SEED_PREFIX),
    instanceId: line(TINY_IMAGE_INSTANCE_ID_PREFIX),
    hostname: line(TINY_IMAGE_HOSTNAME_PREFIX),
    sshKeys: keys === undefined ? undefined : Number(keys),
    address: line(TINY_IMAGE_ADDRESS_PREFIX),
  };
}
