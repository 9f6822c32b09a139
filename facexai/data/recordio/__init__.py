r"""Pure-Python reader and writer for MXNet indexed RecordIO face datasets.

The large public face-recognition training sets (MS1M, Glint360K, WebFace, CASIA as repackaged by
insightface) ship as ``train.rec`` + ``train.idx`` written by MXNet/dmlc. Installing MXNet only to
read them is not an option any more (it is unmaintained and has no wheels for current Pythons), so
this package re-implements the small on-disk format:

* ``train.idx``: text lines ``"<key>\t<byte offset>"`` (:mod:`~facexai.data.recordio.reader`).
* ``train.rec``: framed records, each payload an ``IRHeader`` and the encoded image
  (:mod:`~facexai.data.recordio.format`).
* Record 0 of insightface/arcface_torch sets is a header whose label array is
  ``[first identity record, end identity record]``; images are the records ``1 .. first-1`` and
  every identity record ``k`` holds ``[first image, end image)`` of that identity
  (:mod:`~facexai.data.recordio.dataset` reads it, :mod:`~facexai.data.recordio.writer` writes it).

The names below are the public interface; the submodules are an implementation detail.
"""

from facexai.data.image_codec import decode_bgr, decode_image, encode_image
from facexai.data.recordio.dataset import RecordIODataset, apply_transform
from facexai.data.recordio.format import (
    MAGIC,
    MAX_LABEL,
    IRHeader,
    RecordIOError,
    frame_record,
    pack_payload,
    read_framed,
    read_framed_extent,
    unpack_payload,
)
from facexai.data.recordio.reader import IndexedRecordReader, OffsetTable, read_index
from facexai.data.recordio.writer import PackResult, RecordIOWriter, pack_image_folder, write_face_records
from facexai.files import IMAGE_EXTENSIONS

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAGIC",
    "MAX_LABEL",
    "IRHeader",
    "IndexedRecordReader",
    "OffsetTable",
    "PackResult",
    "RecordIODataset",
    "RecordIOError",
    "RecordIOWriter",
    "apply_transform",
    "decode_bgr",
    "decode_image",
    "encode_image",
    "frame_record",
    "pack_image_folder",
    "pack_payload",
    "read_framed",
    "read_framed_extent",
    "read_index",
    "unpack_payload",
    "write_face_records",
]
