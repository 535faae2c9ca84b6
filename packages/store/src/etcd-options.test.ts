import { BerthError, ErrorCode } from "@berth/core";
import { describe, expect, it } from "vitest";
import { resolveEtcdStoreOptions, type EtcdStoreOptions } from "./etcd-options.js";
import { EtcdStore } from "./etcd-store.js";

const refused = (options: EtcdStoreOptions, field: string, message: RegExp): void => {
  let error: unknown;
  try {
    resolveEtcdStoreOptions(options);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(BerthError);
  expect((error as BerthError).code).toBe(ErrorCode.InvalidArgument);
  expect((error as BerthError).field).toBe(field);
  expect((error as BerthError).message).toMatch(message);
};

describe("resolveEtcdStoreOptions", () => {
  it("fills in defaults", () => {
    expect(resolveEtcdStoreOptions({ endpoints: ["http://10.0.0.1:2379", "http://etcd-2"] })).toEqual({
      endpoints: ["http://10.0.0.1:2379", "http://etcd-2:2379"],
      dialTimeoutMs: 5_000,
      callTimeoutMs: 5_000,
      attemptTimeoutMs: 2_000,
      keepaliveTimeMs: 10_000,
      keepaliveTimeoutMs: 5_000,
      groupCommit: true,
      maxReceiveBytes: 64 * 1024 * 1024,
      receipts: true,
      receiptPrefix: "/berth/receipts/",
      tls: undefined,
      auth: undefined,
    });
  });

  it("explains what is wrong and what to write instead", () => {
    refused({ endpoints: [] }, "endpoints", /at least one etcd URL is required, such as http:\/\/127\.0\.0\.1:2379/);
    refused({ endpoints: ["127.0.0.1:2379"] }, "endpoints[0]", /no http:\/\/ or https:\/\/ scheme/);
    refused({ endpoints: ["http://a:1", ""] }, "endpoints[1]", /is empty/);
    refused({ endpoints: ["http://a:2379/v3"] }, "endpoints[0]", /only scheme:\/\/host:port/);
    refused({ endpoints: ["http://a:2379", "https://b:2379"] }, "endpoints", /mixes http and https/);
    refused({ endpoints: ["http://a:2379"], keepaliveTimeMs: 1_000 }, "keepaliveTimeMs", /below etcd's minimum of 5000/);
    refused({ endpoints: ["http://a:2379"], callTimeoutMs: 0 }, "callTimeoutMs", /whole number of milliseconds/);
    refused({ endpoints: ["http://a:2379"], dialTimeoutMs: 1.5 }, "dialTimeoutMs", /whole number/);
    refused({ endpoints: ["http://a:2379"], callTimeoutMs: 1_000, attemptTimeoutMs: 2_000 }, "attemptTimeoutMs", /longer than callTimeoutMs/);
    refused({ endpoints: ["http://a:2379"], receiptPrefix: "" }, "receiptPrefix", /non-empty/);
    refused({ endpoints: ["http://a:2379"], tls: { ca: "pem" } }, "tls", /use https:\/\//);
    refused({ endpoints: ["https://a:2379"], tls: { ca: "pem", cert: "c" } }, "tls", /together/);
  });

  it("is what the EtcdStore constructor applies (it throws without connecting)", () => {
    expect(() => new EtcdStore({ endpoints: ["localhost:2379"] })).toThrow(/scheme/);
  });
});
