"""DataModules and datasets: synthetic faces (the embedded default), folders, pairs, insightface formats."""

from facexai.data.align import align_face, align_folder, read_landmarks
from facexai.data.folder_modules import FacePairsDataModule, ImageFolderDataModule, InsightFaceDataModule
from facexai.data.folders import Pair, read_pairs
from facexai.data.recordio import RecordIODataset, RecordIOWriter, pack_image_folder, write_face_records
from facexai.data.synthetic_module import SyntheticFacesDataModule
from facexai.data.verification_bin import VerificationBinDataset, load_verification_bin, write_verification_bin

__all__ = [
    "FacePairsDataModule",
    "ImageFolderDataModule",
    "InsightFaceDataModule",
    "Pair",
    "RecordIODataset",
    "RecordIOWriter",
    "SyntheticFacesDataModule",
    "VerificationBinDataset",
    "align_face",
    "align_folder",
    "load_verification_bin",
    "pack_image_folder",
    "read_landmarks",
    "read_pairs",
    "write_face_records",
    "write_verification_bin",
]
