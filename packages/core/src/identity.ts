import { BerthError, ErrorCode, quote } from "./errors.js";

/**
 * Who a peer is, as its certificate says. Berth's certificates follow the Kubernetes convention of
 * naming the subject in CN and its group in O (`CN=host-1, O=berth:host`): the group is the role,
 * the CN the name. One CA signs all of them; `berth certs` issues them.
 *
 * - `controller`: a controller (server certificate, also usable as a client).
 * - `host`: an agent; it may act only as the host its CN names (the kubelet's node authorizer rule).
 * - `admin`: an operator who may read and change.
 * - `viewer`: an operator who may read and watch.
 */
export type PeerRole = "controller" | "host" | "admin" | "viewer";

/** The certificate subject O of each role. */
export const ROLE_ORGANIZATION: Readonly<Record<PeerRole, string>> = {
  controller: "berth:controller",
  host: "berth:host",
  admin: "berth:admin",
  viewer: "berth:viewer",
};

/** A peer whose certificate the CA signed: its role and name. */
export interface PeerIdentity {
  role: PeerRole;
  /** The subject CN: the host id for a host, the operator's or controller's name otherwise. */
  name: string;
}

const roleOfOrganization = new Map<string, PeerRole>(Object.entries(ROLE_ORGANIZATION).map(([role, o]) => [o, role as PeerRole]));

/** A certificate subject as Node's `tls` reports it (a field repeated in the subject is an array). */
export interface CertificateSubject {
  CN?: string | string[];
  O?: string | string[];
}

/**
 * The identity a verified certificate subject names. Throws UNAUTHENTICATED when the subject does
 * not name exactly one Berth role and one CN: a certificate this CA signed for something else is
 * not an identity Berth accepts.
 */
export function identityOfSubject(subject: CertificateSubject | undefined): PeerIdentity {
  const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v);
  const organizations = subject?.O === undefined ? [] : Array.isArray(subject.O) ? subject.O : [subject.O];
  const roles = organizations.map((o) => roleOfOrganization.get(o)).filter((r): r is PeerRole => r !== undefined);
  const name = one(subject?.CN);
  if (roles.length !== 1) {
    throw new BerthError(
      ErrorCode.Unauthenticated,
      `the client certificate names ${roles.length === 0 ? "no" : "more than one"} Berth role (subject O ${quote(organizations.join(","))}; ` +
        `expected one of ${Object.values(ROLE_ORGANIZATION).join(", ")}): issue one with 'berth certs issue'`,
    );
  }
  if (!name) throw new BerthError(ErrorCode.Unauthenticated, "the client certificate has no single subject CN (the host or operator name)");
  return { role: roles[0]!, name };
}
