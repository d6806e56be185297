/**
 * The hosts' AMI id, as EC2 prints it: a base version input (the host kernel shapes what a snapshot
 * restores on) and a pinned stack setting, so one rule for the stack's config and the bake's flags.
 */
export const AMI_ID = /^ami-[0-9a-f]{8,17}$/;
