export * from "./driver.js";
export * from "./fake-driver.js";
