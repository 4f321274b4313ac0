/**
 * Names and metadata keys of the temporary resources (snapshots, volumes) a backup or restore
 * run creates in the volume plane. `permafrost cleanup` finds what a killed run left behind by
 * these strings: they are stored in the cloud, so they never change.
 */

/** Name prefix of temporary volumes and snapshots. */
export const TEMP_PREFIX = 'permafrost-tmp-';
/** Metadata key marking a temporary resource created by a backup or restore run (value 'true'). */
export const TEMPORARY_KEY = 'permafrost:temporary';
/** Metadata key naming the agent host that created a temporary resource. */
export const HOST_KEY = 'permafrost:host';
/** Metadata key naming the job that created a temporary resource. */
export const JOB_KEY = 'permafrost:job';

/** Metadata that marks a cloud resource as ours and temporary (cleanup finds them by it). */
export function tempMetadata(host: string, jobId: string): Record<string, string> {
  return { [TEMPORARY_KEY]: 'true', [HOST_KEY]: host, [JOB_KEY]: jobId };
}
