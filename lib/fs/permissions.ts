// POSIX permission checks against the credentials a filesystem was mounted with.
export const R_OK = 4;
export const W_OK = 2;
export const X_OK = 1;

export interface Credentials {
  uid: number;
  gid: number;
  /** Supplementary groups. */
  groups?: readonly number[];
}

export interface Owner {
  mode: number;
  uid: number;
  gid: number;
}

/** The rwx bits that apply to `cred` for an inode: owner, group or other, as POSIX picks them. */
export function applicableBits(owner: Owner, cred: Credentials): number {
  if (cred.uid === owner.uid) return (owner.mode >> 6) & 7;
  if (cred.gid === owner.gid || cred.groups?.includes(owner.gid)) return (owner.mode >> 3) & 7;
  return owner.mode & 7;
}

/** Root may read and write anything and search any directory; everyone else needs the bits. */
export function permits(owner: Owner, cred: Credentials, want: number, isDirectory: boolean): boolean {
  if (cred.uid === 0) {
    if ((want & X_OK) === 0 || isDirectory) return true;
    return (owner.mode & 0o111) !== 0;
  }
  return (applicableBits(owner, cred) & want) === want;
}

export function describeWant(want: number): string {
  const parts: string[] = [];
  if (want & R_OK) parts.push('read');
  if (want & W_OK) parts.push('write');
  if (want & X_OK) parts.push('search');
  return parts.join(' and ');
}
