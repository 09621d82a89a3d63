from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetChunkRequest(_message.Message):
    __slots__ = ("repository", "digest", "size", "blob", "stored_size")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    STORED_SIZE_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    size: int
    blob: str
    stored_size: int
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., blob: _Optional[str] = ..., stored_size: _Optional[int] = ...) -> None: ...

class GetChunkResponse(_message.Message):
    __slots__ = ("blob",)
    BLOB_FIELD_NUMBER: _ClassVar[int]
    blob: bytes
    def __init__(self, blob: _Optional[bytes] = ...) -> None: ...
