"""CIFAR-10 in, prepared arrays out: the three sources, safe archive reading, checksums, subsets.

`prepare` turns one of three sources (`sources`) into the prepared format every later stage
loads with `load_split` (`prepared`). Nothing in an input is trusted (`members`, `official`).

    split       Split, DataError and the image geometry every module below shares
    members     reading a folder's or an archive's files into memory: regular files only, unsafe names,
                links and duplicates refused, sizes bounded before reading
    checksums   digests of source files and folders, checked against the expected ones
    official    the official binary and python archives; the unpickler that can only rebuild arrays
    images      image-folder trees and decoding their images (size from the header, every mode scaled or refused)
    prepared    the prepared folder: writing it whole, loading a split, class-balanced subsets
    sources     `prepare`: the three sources, and the download of the official archive
"""

from onecycle.data.images import MAX_IMAGE_PIXELS
from onecycle.data.members import MAX_MEMBER_BYTES, MAX_TOTAL_BYTES, member_name
from onecycle.data.official import CIFAR10_BINARY_MD5, CIFAR10_PYTHON_MD5, CifarUnpickler
from onecycle.data.prepared import balanced_subset, class_quotas, load_split
from onecycle.data.sources import CACHE_NAME, CIFAR10_URL, DOWNLOAD_BACKOFF_S, prepare
from onecycle.data.split import DataError, Split

__all__ = [
    "CACHE_NAME",
    "CIFAR10_BINARY_MD5",
    "CIFAR10_PYTHON_MD5",
    "CIFAR10_URL",
    "DOWNLOAD_BACKOFF_S",
    "MAX_IMAGE_PIXELS",
    "MAX_MEMBER_BYTES",
    "MAX_TOTAL_BYTES",
    "CifarUnpickler",
    "DataError",
    "Split",
    "balanced_subset",
    "class_quotas",
    "load_split",
    "member_name",
    "prepare",
]
