"""Read .h5ad headers (shapes, genes, nnz, labels) with h5py and load row/column subsets as CSR.

Nothing here loads a whole matrix unless asked: headers come from HDF5 attributes and
the small obs/var arrays; matrices are read in row chunks, cast to float32 and cut to
the requested genes chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from hpc.errors import InputError

#: Bytes of stored values read per chunk when loading a matrix.
CHUNK_BYTES = 64 * 1024**2
#: Stored values checked for integrality by ``diagnose`` (a cheap partial read).
SAMPLE_VALUES = 200_000


@dataclass
class H5adHeader:
    """What an .h5ad says about itself without loading its matrix (sizes in bytes)."""

    path: str
    n_obs: int
    n_vars: int
    var_names: list[str]
    obs_columns: list[str]
    layer: str | None
    encoding: str  # "csr_matrix" | "csc_matrix" | "array"
    dtype: str
    nnz: int
    labels: pd.Series | None = field(default=None, repr=False)

    @property
    def matrix_key(self) -> str:
        return "X" if self.layer is None else f"layers/{self.layer}"

    @property
    def density(self) -> float:
        total = self.n_obs * self.n_vars
        return self.nnz / total if total else 0.0

    @property
    def stored_bytes(self) -> int:
        """Bytes of the matrix as stored (values + indices + indptr when sparse)."""
        itemsize = np.dtype(self.dtype).itemsize
        if self.encoding == "array":
            return self.n_obs * self.n_vars * itemsize
        return self.nnz * (itemsize + 4) + (self.n_obs + 1) * 8

    def summary(self) -> dict:
        return {
            "path": self.path,
            "n_obs": self.n_obs,
            "n_vars": self.n_vars,
            "matrix": self.matrix_key,
            "encoding": self.encoding,
            "dtype": self.dtype,
            "nnz": self.nnz,
            "density": round(self.density, 6),
            "stored_bytes": self.stored_bytes,
        }


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _read_index(group: h5py.Group) -> list[str]:
    key = group.attrs.get("_index", "_index")
    if key not in group:
        raise KeyError(key)
    return _decode(group[key][()])


def _read_column(group: h5py.Group, key: str) -> pd.Series:
    """One obs column as strings (categorical or plain dataset)."""
    element = group[key]
    if isinstance(element, h5py.Group):  # categorical: codes + categories
        codes = element["codes"][()]
        categories = np.asarray(_decode(element["categories"][()]), dtype=object)
        values = np.where(codes >= 0, categories[np.clip(codes, 0, None)], None)
        return pd.Series(values, dtype=object)
    return pd.Series(_decode(element[()]), dtype=object)


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path}: not an .h5ad file (not HDF5)") from None
    if not all(k in handle for k in ("obs", "var")) or "X" not in handle and "layers" not in handle:
        handle.close()
        raise InputError(f"{path}: not an .h5ad file (no obs/var/X)")
    return handle


def read_header(
    path: str | Path, layer: str | None = None, label_key: str | None = None, role: str = "file"
) -> H5adHeader:
    """Shapes, gene names, obs columns, storage, dtype and nnz of ``path`` (bytes not loaded).

    ``label_key`` (if given) is read as a string Series; a missing key raises InputError
    listing the obs columns.
    """
    with _open(path) as handle:
        try:
            var_names = _read_index(handle["var"])
            obs_group = handle["obs"]
            obs_columns = [str(c) for c in obs_group.attrs.get("column-order", [])]
            n_obs = len(obs_group[obs_group.attrs.get("_index", "_index")])
        except KeyError:
            raise InputError(f"{path}: not an .h5ad file (obs/var index missing)") from None
        key = "X" if layer is None else f"layers/{layer}"
        if key not in handle:
            raise InputError(f"{path}: {role} has no matrix {key!r} (--counts-layer)")
        element = handle[key]
        if isinstance(element, h5py.Dataset):
            encoding, dtype = "array", element.dtype
            nnz = int(np.prod(element.shape))
            shape = element.shape
        else:
            encoding = element.attrs.get("encoding-type", "")
            if isinstance(encoding, bytes):
                encoding = encoding.decode()
            if encoding not in ("csr_matrix", "csc_matrix"):
                raise InputError(f"{path}: matrix {key!r} has unsupported encoding {encoding!r}")
            dtype = element["data"].dtype
            nnz = int(element["data"].shape[0])
            shape = tuple(int(s) for s in element.attrs["shape"])
        if shape != (n_obs, len(var_names)):
            raise InputError(f"{path}: matrix {key!r} has shape {shape}, obs×var is {(n_obs, len(var_names))}")
        labels = None
        if label_key is not None:
            if label_key not in obs_group:
                raise InputError(
                    f"{path}: {role} has no obs column {label_key!r}; obs columns: {', '.join(obs_columns) or '(none)'}"
                )
            labels = _read_column(obs_group, label_key)
    return H5adHeader(
        str(path), n_obs, len(var_names), var_names, obs_columns, layer, encoding, str(np.dtype(dtype)), nnz, labels
    )


def _check_integer(values: np.ndarray, where: str) -> None:
    if values.size == 0:
        return
    if np.issubdtype(values.dtype, np.integer):
        bad_negative = bool((values < 0).any())
        bad_fraction = False
    else:
        bad_negative = bool((values < 0).any())
        bad_fraction = bool((np.mod(values, 1) != 0).any())
    if bad_negative or bad_fraction:
        what = "negative" if bad_negative else "non-integer"
        raise InputError(
            f"{where} holds {what} values: raw counts are expected "
            "(choose the counts with --counts-layer, or pass --allow-non-integer)"
        )


def sample_is_integer(header: H5adHeader) -> bool:
    """Whether the first SAMPLE_VALUES stored values are non-negative integers (cheap)."""
    with h5py.File(header.path, "r") as handle:
        element = handle[header.matrix_key]
        if isinstance(element, h5py.Dataset):
            rows = max(1, SAMPLE_VALUES // max(header.n_vars, 1))
            values = element[: min(rows, header.n_obs)].ravel()
        else:
            values = element["data"][: min(SAMPLE_VALUES, header.nnz)]
    try:
        _check_integer(values, "")
    except InputError:
        return False
    return True


def load_csr(
    header: H5adHeader,
    rows: np.ndarray,
    gene_index: np.ndarray,
    check_integer: bool = True,
    role: str = "file",
) -> sp.csr_matrix:
    """Rows ``rows`` (sorted) and columns ``gene_index`` of the matrix as float32 CSR.

    Read in chunks of about CHUNK_BYTES stored bytes; each chunk is checked for raw
    counts (unless ``check_integer`` is False), cast to float32 and cut to the genes
    before the next one is read. Never densifies more than one chunk of a dense matrix.
    """
    rows = np.asarray(rows, dtype=np.int64)
    gene_index = np.asarray(gene_index, dtype=np.int64)
    where = f"{header.path}: {role} matrix {header.matrix_key!r}"
    itemsize = np.dtype(header.dtype).itemsize
    pieces: list[sp.csr_matrix] = []
    with h5py.File(header.path, "r") as handle:
        element = handle[header.matrix_key]
        if header.encoding == "csc_matrix":
            from anndata.io import sparse_dataset

            matrix = sparse_dataset(element)[:, gene_index]
            matrix = sp.csr_matrix(matrix)[rows]
            if check_integer:
                _check_integer(matrix.data, where)
            return _as_float32_csr(matrix)
        if header.encoding == "array":
            per_row = max(header.n_vars * itemsize, 1)
        else:
            per_row = max(int(header.nnz / max(header.n_obs, 1) * (itemsize + 4)), 1)
        step = int(max(1, CHUNK_BYTES // per_row))
        if header.encoding == "csr_matrix":
            indptr = element["indptr"][()]
            data_ds, indices_ds = element["data"], element["indices"]
        for start in range(0, len(rows), step):
            chunk_rows = rows[start : start + step]
            if header.encoding == "array":
                block = element[chunk_rows[0] : chunk_rows[-1] + 1]
                block = block[chunk_rows - chunk_rows[0]][:, gene_index]
                if check_integer:
                    _check_integer(block, where)
                pieces.append(sp.csr_matrix(block.astype(np.float32, copy=False)))
                continue
            lo, hi = int(indptr[chunk_rows[0]]), int(indptr[chunk_rows[-1] + 1])
            data = data_ds[lo:hi]
            indices = indices_ds[lo:hi]
            local = indptr[chunk_rows[0] : chunk_rows[-1] + 2] - lo
            block = sp.csr_matrix(
                (data, indices, local), shape=(len(local) - 1, header.n_vars)
            )[chunk_rows - chunk_rows[0]]
            if check_integer:
                _check_integer(block.data, where)
            pieces.append(_as_float32_csr(block[:, gene_index]))
    if not pieces:
        return sp.csr_matrix((0, len(gene_index)), dtype=np.float32)
    matrix = pieces[0] if len(pieces) == 1 else sp.vstack(pieces, format="csr")
    return _as_float32_csr(matrix)


def _as_float32_csr(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix)
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float32)
    matrix.sort_indices()
    return matrix


def read_obs(header: H5adHeader, rows: np.ndarray) -> pd.DataFrame:
    """The obs table (all columns) of ``rows``, indexed by the obs names."""
    import anndata

    with h5py.File(header.path, "r") as handle:
        obs = anndata.io.read_elem(handle["obs"])
    return obs.iloc[np.asarray(rows)]
