export type CreateRequireFn = (path: string) => (id: string) => unknown;
