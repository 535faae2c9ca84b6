export * from "./driver.js";
export * from "./fake-driver.js";
export * from "./libvirt/index.js";
export * from "./cloud-init.js";
