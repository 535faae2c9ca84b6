/**
 * `@berth/controller/scaling`: the scale group rules other packages check against (the CLI's
 * flags and its defaults), without loading the controller itself. Only pure modules here.
 */
export { describeScaleUpStep, resolveScalePolicy, SCALE_POLICY_LIMITS, type ResolvedScalePolicy } from "./autoscale.js";
export { MAX_SCALE_GROUP_NAME, MAX_SCALE_GROUP_SIZE, SCALE_GROUP_LABEL } from "./scale-groups.js";
