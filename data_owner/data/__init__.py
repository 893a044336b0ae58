"""The data owner's data pipeline: load raw interactions, filter them, split them leave-one-out."""

from data_owner.data.errors import DataFormatError, DatasetUnavailableError
from data_owner.data.filters import deduplicate, filter_min_interactions, reindex
from data_owner.data.loaders import (
    load_movielens_ratings_dat,
    load_movielens_udata,
    load_recbole_inter,
    load_table,
    load_user_lists,
)
from data_owner.data.registry import (
    DATA_DIR_ENV,
    DATASETS,
    DatasetSpec,
    data_dir,
    download_ml100k,
    load_dataset,
    load_path,
    loader_for_path,
    locate_dataset,
)
from data_owner.data.split import LeaveOneOutSplit, check_no_leakage, leave_one_out_split
from data_owner.data.table import InteractionTable

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DataFormatError",
    "DatasetSpec",
    "DatasetUnavailableError",
    "InteractionTable",
    "LeaveOneOutSplit",
    "check_no_leakage",
    "data_dir",
    "deduplicate",
    "download_ml100k",
    "filter_min_interactions",
    "leave_one_out_split",
    "load_dataset",
    "load_movielens_ratings_dat",
    "load_movielens_udata",
    "load_path",
    "load_recbole_inter",
    "load_table",
    "load_user_lists",
    "loader_for_path",
    "locate_dataset",
    "reindex",
]
