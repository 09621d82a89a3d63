"""Game images (storage on cloud): a game version as content-defined chunks and a manifest, held in an OCI registry.

chunking        FastCDC cuts, vectorised (pure)
manifest        the manifest: its model, canonical JSON and the checks on untrusted ones (pure)
tree            a directory into chunks and a manifest; a chunk's stored (zstd) form
oci             a small OCI distribution client (blobs, manifests, Basic and bearer-token auth)
publish         `cloudseat-images push`: upload what the registry lacks, then the manifest
local_registry  the embedded Distribution registry (a writer and a read-only reader)
"""
