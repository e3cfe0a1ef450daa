"""Content-addressed image files, and which databases own them: in a folder or in S3.

    images/ab/abcdef….png    full-size PNG (sources RGB, masks L, outputs RGB or RGBA)
    thumbs/ab/abcdef….webp   WebP thumbnail, long side THUMB_SIDE (sources and outputs)
    refs/<store id>/ab/abcdef…   an empty "claim": the database with that store id uses the image
    refs/<store id>/.store       where that id's database was opened (core/history/identity.py)

The name is core.images.content_hash of the array (shape, dtype and bytes), so the same image is
stored once however many rows (and databases) use it. Files are written whole (a temp file renamed
into place; one PUT on S3) BEFORE the row that points at them is committed, and an image already
there is never written again.

Where (config.blob_url(), BACKDROP_BLOB_URL):
    unset                 the data dir (FolderBackend): the layout above under BACKDROP_DATA_DIR
    /a/folder, file:///…  that folder (FolderBackend); a mounted network filesystem works as is
    s3://bucket/prefix    S3-compatible object storage (S3Backend, boto3): the same layout as keys
                          under `prefix/`; endpoint BACKDROP_S3_ENDPOINT_URL (else AWS_ENDPOINT_URL;
                          unset: AWS itself), credentials and region from the usual AWS_*
                          environment (or ~/.aws, an instance role). An image is uploaded with
                          If-None-Match: * after a HEAD found it missing: written once.

Ownership: several databases may share one image store (a copy, a test database, another team).
A database only ever deletes an image through `release`: it drops its own claim, and the files go
only when no other database's claim is left. An image nobody claims (written by an older Backdrop,
or by another tool) is never deleted. A claim's mtime (LastModified on S3) is its last use: the
sweep leaves claims younger than its grace period alone (a run in flight in another process may be
about to commit the row that uses it).

Locking: in a folder, claiming and releasing take one lock (`refs/.lock`, flock), so a writer that
claims an image either sees it still there or rewrites it. S3 has no such lock. Within ONE
database (any number of app servers over one PostgreSQL history: the team set-up) nothing is lost
even so: delete_run and the sweep announce each deletion in the database (a short write
transaction) before they release files, and a writer commits its row only if no deletion began or
ran since it checked its files, else it checks (and re-uploads) them again first
(Writes._commit_with_files). No one holds the database's write lock while the image store works,
so a slow or hung store never blocks other writers; S3 requests are bounded (S3_TIMEOUT_S, and a
store that stops answering fails every request at once for as long, with a WARNING while waiting).
What remains is a race between two DIFFERENT databases sharing one bucket prefix:
if one releases an image in the instant between the other's claim and its commit, the image can go
(the other's sweep then reports it in missing_files). Give each database its own prefix, or never
share one between databases that delete runs.
"""
from __future__ import annotations

# Where it lives: names.py (paths, thumbnails, Blob), folder.py (FolderBackend), s3.py (S3Backend),
# claims.py (BlobStore: claims, releases, markers; open_backend).
from core.history.blobs.claims import Backend, BlobStore, open_backend
from core.history.blobs.folder import FolderBackend
from core.history.blobs.names import (AREAS, MARKER, REFS, THUMB_QUALITY, THUMB_SIDE, Blob, check_image,
                                      claim_rel, digest_of, encode_thumbnail, image_rel, marker_rel,
                                      thumb_rel)
from core.history.blobs.s3 import S3_TIMEOUT_S, S3Backend, s3_timeout

__all__ = ["AREAS", "MARKER", "REFS", "THUMB_QUALITY", "THUMB_SIDE", "S3_TIMEOUT_S", "Backend", "Blob",
           "BlobStore", "FolderBackend", "S3Backend", "check_image", "claim_rel", "digest_of",
           "encode_thumbnail", "image_rel", "marker_rel", "open_backend", "s3_timeout", "thumb_rel"]
