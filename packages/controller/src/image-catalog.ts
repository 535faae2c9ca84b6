import { randomUUID } from "node:crypto";
import type { HostImage, Image, ImageInfo, Vm } from "@berth/api";
import { alreadyExists, BerthError, ErrorCode, notFound, validateImage, validateName } from "@berth/core";
import type { ClusterStore } from "@berth/store";
import type { AgentSession } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";
import type { FencedWriter } from "./fenced-writer.js";
import { encodeImage, Keys } from "./keys.js";
import { waitUpTo } from "./wait.js";

// The image catalog: records under /berth/v1/images/<name>, written only here. Hosts fetch an
// image the first time a VM on them needs it (the create command carries its source); the catalog
// only says what images there are, and answers with where they are from the agents' reports.

/** What the catalog reads: the cache and the agents' live sessions (their reports). */
export interface ImageCatalogDeps {
  store: ClusterStore;
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
}

/** How long a write waits for its own change to reach the cache before answering. */
const CACHE_CATCH_UP_MS = 5_000;

/** Where one image is held: the hosts (live sessions) reporting it, and the size one of them reports. */
interface Holders {
  hosts: string[];
  held: HostImage | undefined;
}

/**
 * An image as operators see it (pure): the record, the hosts that report holding its id (sorted),
 * how many VM records name it, and its sizes as a host reports them (0 until one holds it).
 */
export function imageInfoOf(image: Image, holders: Holders | undefined, vms: number): ImageInfo {
  return {
    image,
    hosts: [...(holders?.hosts ?? [])].sort(),
    vms,
    sizeBytes: holders?.held?.sizeBytes ?? 0,
    virtualSizeBytes: holders?.held?.virtualSizeBytes ?? 0,
  };
}

/** One pass over the live sessions: image id → who holds it. */
function holdersById(sessions: ReadonlyMap<string, AgentSession>): Map<string, Holders> {
  const out = new Map<string, Holders>();
  for (const session of sessions.values()) {
    if (!session.isLive) continue;
    for (const held of session.holdings.images) {
      let h = out.get(held.imageId);
      if (!h) out.set(held.imageId, (h = { hosts: [], held }));
      h.hosts.push(session.hostId);
    }
  }
  return out;
}

/** One pass over the VM records: image name → how many name it. */
function vmsByImage(vms: readonly Vm[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const vm of vms) {
    const image = vm.spec?.image;
    if (image) out.set(image, (out.get(image) ?? 0) + 1);
  }
  return out;
}

/** The catalog, sorted by name, each image with where it is (ListImages). */
export function listImages(deps: ImageCatalogDeps): ImageInfo[] {
  const holders = holdersById(deps.sessions);
  const vms = vmsByImage(deps.state.allVms());
  return deps.state
    .allImages()
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((image) => imageInfoOf(image, holders.get(image.id), vms.get(image.name) ?? 0));
}

/** One image with where it is (GetImage). INVALID_ARGUMENT for a bad name, NOT_FOUND. */
export function getImage(deps: ImageCatalogDeps, name: string): ImageInfo {
  validateName(name, "name");
  const image = deps.state.image(name);
  if (!image) throw notFound(`image '${name}'`);
  const vms = deps.state.allVms().filter((vm) => vm.spec?.image === name).length;
  return imageInfoOf(image, holdersById(deps.sessions).get(image.id), vms);
}

/**
 * Adds an image to the catalog (CreateImage): validated (INVALID_ARGUMENT naming the field), the
 * format defaulting to qcow2, a new id (a UUID: hosts keep their copy under it, so an image made
 * again under an old name is a new image to them) and the time. Fenced create-if-absent on the
 * name: ALREADY_EXISTS when taken. Nothing is fetched now.
 */
export async function createImage(deps: ImageCatalogDeps, writer: FencedWriter, input: Image | undefined, nowMs: number): Promise<Image> {
  validateImage(input, "image");
  const image: Image = {
    id: randomUUID(),
    name: input.name,
    source: input.source,
    format: input.format || "qcow2",
    sha256: input.sha256,
    createdAtMs: nowMs,
  };
  const key = Keys.image(image.name);
  const result = await writer.commit({ compare: [{ key, target: "createRevision", equals: 0 }], ops: [{ type: "put", key, value: encodeImage(image) }] });
  if (!result.succeeded) throw alreadyExists(`image '${image.name}'`);
  await waitUpTo(deps.state.images.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
  return image;
}

/**
 * Removes an image from the catalog (DeleteImage). Refused with FAILED_PRECONDITION naming the VMs
 * while any VM record names it (a VM made from it may be created again elsewhere, which needs its
 * source). Hosts keep the copies they hold: nothing tells them to remove one. Guarded on the
 * record's revision and fenced. NOT_FOUND.
 */
export async function deleteImage(deps: ImageCatalogDeps, writer: FencedWriter, name: string): Promise<void> {
  validateName(name, "name");
  const kv = await deps.store.get(Keys.image(name));
  if (!kv) throw notFound(`image '${name}'`);
  const users = deps.state
    .allVms()
    .filter((vm) => vm.spec?.image === name)
    .map((vm) => vm.spec!.name)
    .sort();
  if (users.length > 0) {
    const shown = users.slice(0, 5).join(", ") + (users.length > 5 ? ` and ${users.length - 5} more` : "");
    throw new BerthError(ErrorCode.FailedPrecondition, `image '${name}' is used by ${users.length} VM(s) (${shown}): delete them first`);
  }
  const result = await writer.commit({ compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }], ops: [{ type: "delete", key: kv.key }] });
  if (!result.succeeded) throw new BerthError(ErrorCode.Conflict, `image '${name}' changed meanwhile; retry`);
  await waitUpTo(deps.state.images.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
}
