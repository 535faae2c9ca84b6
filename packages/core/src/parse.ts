import type { Resources } from "@berth/api";
import { invalidArgument } from "./errors.js";
import { parseSizeGib, parseSizeMib } from "./resources.js";
import { validateLabels } from "./validation.js";

// Parsers of the text operators type (flags, env files). Each throws INVALID_ARGUMENT naming
// `field` (a flag or an option name), so every entry point reports bad input the same way.

/** Splits `host:port` or `[v6]:port`. Port 0 ("any free port") only when `allowPortZero`. */
export function parseHostPort(text: string, field: string, options: { allowPortZero?: boolean } = {}): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[2]) : NaN;
  const min = options.allowPortZero ? 0 : 1;
  if (!m || port < min || port > 65535) throw invalidArgument(field, `'${text}' is not HOST:PORT (example: 127.0.0.1:7400)`);
  return { host: m[1] ?? "", port };
}

/** A comma-separated list of `host:port` addresses, duplicates removed, at least one. */
export function parseHostPortList(text: string, field: string): string[] {
  const items = splitList(text);
  if (items.length === 0) throw invalidArgument(field, "no address given (example: 127.0.0.1:7400)");
  for (const item of items) parseHostPort(item, field);
  return [...new Set(items)];
}

/** A comma-separated list of etcd endpoint URLs (`http://10.0.0.5:2379`), at least one. */
export function parseEtcdEndpoints(text: string, field: string): string[] {
  const urls = splitList(text);
  if (urls.length === 0) throw invalidArgument(field, "no URL given (example: http://127.0.0.1:2379)");
  for (const u of urls) {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw invalidArgument(field, `'${u}' is not a URL (example: http://127.0.0.1:2379)`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw invalidArgument(field, `'${u}' must be an http:// or https:// URL`);
    }
  }
  return urls;
}

/**
 * `vcpus=16,memory=64GiB,disk=1TiB`: any of the three keys, in any order; bare memory is MiB, bare
 * disk GiB. Returns only the keys given.
 */
export function parseCapacity(text: string, field: string): Partial<Resources> {
  const parts = splitList(text);
  if (parts.length === 0) throw invalidArgument(field, "empty (example: vcpus=16,memory=64GiB,disk=1TiB)");
  const capacity: Partial<Resources> = {};
  for (const part of parts) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq).trim();
    const value = eq < 0 ? "" : part.slice(eq + 1).trim();
    if (eq < 0 || value === "") throw invalidArgument(field, `'${part}' must be KEY=VALUE (keys: vcpus, memory, disk)`);
    switch (key) {
      case "vcpus": {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > 1 << 20) throw invalidArgument(`${field} vcpus`, `'${value}' is not a whole number from 1 to ${1 << 20}`);
        capacity.vcpus = n;
        break;
      }
      case "memory":
        capacity.memoryMib = parseSizeMib(value, `${field} memory`);
        if (capacity.memoryMib < 1) throw invalidArgument(`${field} memory`, "must be more than 0");
        break;
      case "disk":
        capacity.diskGib = parseSizeGib(value, `${field} disk`);
        break;
      default:
        throw invalidArgument(field, `unknown key '${key}' (keys: vcpus, memory, disk)`);
    }
  }
  return capacity;
}

/** Repeated `KEY=VALUE` items (labels), checked against the label rules. */
export function parseLabelAssignments(items: readonly string[], field: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw invalidArgument(field, `'${item}' must be KEY=VALUE`);
    labels[item.slice(0, eq)] = item.slice(eq + 1);
  }
  validateLabels(labels, field);
  return labels;
}

function splitList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
