/**
 * execa, loaded on first use. It is only needed for volume work (mount, mkfs,
 * blkid, connector scripts) and loads ~130 modules, a tenth of a second that
 * every other command (a backup of a directory, list, restore) would pay at
 * start.
 */
let loading: Promise<typeof import('execa')> | undefined;

export function loadExeca(): Promise<typeof import('execa')> {
  return (loading ??= import('execa'));
}
