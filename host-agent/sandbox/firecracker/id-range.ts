/**
 * Hands out numbers from [first, first + count), e.g. the uid/gid each jailed VM runs as. Released
 * numbers go to the back of the queue so a uid is not reused right after its VM died.
 */
export class IdRangeAllocator {
  private readonly free: number[] = [];
  private readonly used = new Set<number>();

  constructor(
    readonly first: number,
    readonly count: number,
  ) {
    for (let i = 0; i < count; i++) this.free.push(first + i);
  }

  acquire(): number {
    const id = this.free.shift();
    if (id === undefined) throw new Error(`all ${this.count} ids from ${this.first} are in use`);
    this.used.add(id);
    return id;
  }

  release(id: number): void {
    if (!this.used.delete(id)) return;
    this.free.push(id);
  }

  get inUse(): number {
    return this.used.size;
  }
}
