"""The archive as a timeline reads it: the verifier's sources, without the per-version lock lookups.

:class:`~pipeline.verifier.archive.BucketSource` asks the bucket for every version's Object Lock retention
while it lists (``auditseal verify`` checks each lock). A timeline judges the records, not the locks (the
evidence report and ``verify`` do), and skips most objects, so it lists the same entries without those
requests: one listing, then a GET for each manifest and each object it reads.
"""

from __future__ import annotations

from pipeline.verifier.archive import BucketSource, ObjectVersion


class UnlockedBucketSource(BucketSource):
    """:class:`BucketSource` whose versions carry no lock (``lock=None``: not looked up)."""

    def _version(self, key: str, version_id: str, modified) -> ObjectVersion:
        def read() -> bytes:
            return self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)["Body"].read()

        return ObjectVersion(version_id, read, None, modified)


def without_locks(source):
    """``source`` listed without lock lookups (a DirectorySource has none to skip)."""
    if isinstance(source, BucketSource) and not isinstance(source, UnlockedBucketSource):
        return UnlockedBucketSource(source.s3, source.bucket, source.prefix)
    return source
