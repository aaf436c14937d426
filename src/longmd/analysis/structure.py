"""Structure metrics: radial distribution functions and interatomic-distance histograms.

Pairs come from :func:`longmd.neighbors.neighbor_list` (vesin), never from an O(N^2) loop. Periodic images
within ``r_max`` count as pairs. The RDF is normalised exactly like ASE's ``ase.geometry.rdf.get_rdf``
(>= 3.27): bin k holds distances in (r_k, r_k+1], and

    g_ab(r) = counts_ab(r) / (N_a * (N_b / V) * 4/3 pi (r_k+1^3 - r_k^3)),

averaged over frames; the total g(r) uses all atoms (N_a = N_b = N). See ``docs/analysis.md``.

That normalisation needs a bulk system: in a slab or a molecule in a box, N_b / V is set by the vacuum one
chose, so g(r) scales with it. Non-bulk frames (:func:`is_bulk`: a non-periodic axis, or an empty layer thicker
than :data:`VACUUM_GAP_A` along a cell axis) therefore get the **pair density** instead (``normalization=
"pair_density"``, the default ``"auto"`` choosing it),

    n_ab(r) = counts_ab(r) / (N_a * 4/3 pi (r_k+1^3 - r_k^3))   (1/Å^3),

the mean number density of b atoms at distance r from an a atom: the same curve whatever the vacuum (as long
as it is wider than r_max), and n_ab = (N_b / V) g_ab in bulk.
"""

from __future__ import annotations

import numpy as np

from longmd.analysis._frames import as_frames, frame_cells, pair_distances, pbc3

VACUUM_GAP_A = 5.0
"""An empty layer thicker than this (Å) along a cell axis makes a frame non-bulk (:func:`is_bulk`)."""
NORMALIZATIONS = ("auto", "bulk", "pair_density")


def is_bulk(positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | bool,
            gap_A: float = VACUUM_GAP_A) -> bool:
    """Whether the frames fill their cell: every axis periodic and, in every frame and along every cell axis, no
    atom-free layer thicker than ``gap_A`` Å (a slab's vacuum, a molecule in a box)."""
    pos = as_frames(positions)
    if not pbc3(pbc).all():
        return False
    for frame, c in zip(pos, frame_cells(cell, len(pos)), strict=True):
        if abs(float(np.linalg.det(c))) < 1e-10:
            return False
        inverse = np.linalg.inv(c)  # columns: reciprocal vectors b_k (a_i . b_k = delta_ik)
        heights = 1.0 / np.linalg.norm(inverse, axis=0)  # spacing of the lattice planes of each axis, Å
        frac = np.sort((frame @ inverse) % 1.0, axis=0)
        gaps = np.diff(np.concatenate([frac, frac[:1] + 1.0]), axis=0).max(axis=0) * heights
        if (gaps > gap_A).any():
            return False
    return True


def rdf_normalization(positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | bool,
                      volume: float | None = None, normalization: str = "auto") -> str:
    """``"bulk"`` (g(r), N_b / V) or ``"pair_density"`` (n(r), 1/Å^3): what ``"auto"`` resolves to for these frames
    (bulk with an explicit ``volume`` or when :func:`is_bulk`); an explicit choice is returned as it is."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    if normalization != "auto":
        return normalization
    return "bulk" if volume is not None or is_bulk(positions, cell, pbc) else "pair_density"


def _bin_edges(r_max: float, n_bins: int) -> np.ndarray:
    if r_max <= 0 or n_bins < 1:
        raise ValueError(f"need r_max > 0 and n_bins >= 1, got r_max={r_max}, n_bins={n_bins}")
    return np.linspace(0.0, r_max, n_bins + 1)


def _species_counts(
    positions: np.ndarray,
    numbers: np.ndarray,
    species: list[int],
    cell: np.ndarray | None,
    pbc: np.ndarray | bool,
    r_max: float,
    n_bins: int,
    volume: float | None,
    normalization: str = "auto",
) -> np.ndarray:
    """Per-frame g_ab (or n_ab) for all species pairs: (n_species, n_species, n_bins), averaged over frames."""
    pos = as_frames(positions)
    cells, pbc_arr = frame_cells(cell, len(pos)), pbc3(pbc)
    code = np.searchsorted(species, numbers)
    n_of = np.bincount(code, minlength=len(species)).astype(np.float64)
    edges = _bin_edges(r_max, n_bins)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    dr = float(r_max / n_bins)
    n_s = len(species)
    g = np.zeros((n_s, n_s, n_bins))
    bulk = rdf_normalization(pos, cells, pbc_arr, volume, normalization) == "bulk"
    for frame, c in zip(pos, cells, strict=True):
        vol = abs(float(np.linalg.det(c))) if volume is None else float(volume)
        if bulk and vol < 1e-10:
            raise ValueError("a bulk RDF needs a volume: give a cell with non-zero volume or pass volume= "
                             "(or use normalization='pair_density')")
        i, j, d = pair_distances(frame, c, pbc_arr, r_max)
        idx = np.ceil(d / dr).astype(np.int64)
        ok = (idx >= 1) & (idx <= n_bins)
        key = (code[i[ok]] * n_s + code[j[ok]]) * n_bins + idx[ok] - 1
        counts = np.bincount(key, minlength=n_s * n_s * n_bins).reshape(n_s, n_s, n_bins)
        norm = n_of[:, None] * n_of[None, :] / vol if bulk else np.repeat(n_of[:, None], n_s, axis=1)
        g += counts / np.where(norm > 0, norm, 1.0)[:, :, None] / shell
    return g / len(pos)


def _centres(r_max: float, n_bins: int) -> np.ndarray:
    edges = _bin_edges(r_max, n_bins)
    return 0.5 * (edges[1:] + edges[:-1])


def rdf(
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: np.ndarray | bool,
    r_max: float,
    n_bins: int = 200,
    numbers: np.ndarray | None = None,
    pair: tuple[int, int] | None = None,
    volume: float | None = None,
    normalization: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r) (or, for non-bulk frames, the pair density n(r)), averaged over frames.

    Args:
        positions: (N, 3) or (T, N, 3) Å. cell: (3, 3), (T, 3, 3) or None. pbc: bool or (3,).
        r_max, n_bins: histogram range (0, r_max] in Å and its number of bins.
        numbers, pair: atomic numbers (N,) and (Z_a, Z_b) for the partial g_ab(r); default total g(r).
        volume: Å^3, overrides |det(cell)| (a bulk g(r) of a non-periodic system).
        normalization: ``"bulk"`` (g(r), dimensionless), ``"pair_density"`` (n(r), 1/Å^3) or ``"auto"``
            (:func:`rdf_normalization`: bulk for bulk frames or a given ``volume``, else the pair density).

    Returns:
        (bin centres r (n_bins,), g (n_bins,)).
    """
    n_atoms = as_frames(positions).shape[1]
    nums = np.zeros(n_atoms, dtype=np.int64) if numbers is None else np.asarray(numbers, dtype=np.int64)
    if pair is None:
        species = [0]
        code_nums = np.zeros(n_atoms, dtype=np.int64)
        g = _species_counts(positions, code_nums, species, cell, pbc, r_max, n_bins, volume, normalization)[0, 0]
        return _centres(r_max, n_bins), g
    if numbers is None:
        raise ValueError("a partial RDF (pair=...) needs numbers")
    species = sorted(set(nums.tolist()))
    for z in pair:
        if z not in species:
            raise ValueError(f"species {z} of pair {pair} is not among the atoms ({species})")
    g = _species_counts(positions, nums, species, cell, pbc, r_max, n_bins, volume, normalization)
    return _centres(r_max, n_bins), g[species.index(pair[0]), species.index(pair[1])]


def partial_rdfs(
    positions: np.ndarray,
    numbers: np.ndarray,
    cell: np.ndarray | None,
    pbc: np.ndarray | bool,
    r_max: float,
    n_bins: int = 200,
    volume: float | None = None,
    normalization: str = "auto",
) -> tuple[np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """All partial RDFs g_ab(r) (or pair densities n_ab, see :func:`rdf`) with Z_a <= Z_b (g_ab = g_ba; n_ab =
    n_ba only up to N_b / N_a), from one pass over the frames."""
    nums = np.asarray(numbers, dtype=np.int64)
    species = sorted(set(nums.tolist()))
    g = _species_counts(positions, nums, species, cell, pbc, r_max, n_bins, volume, normalization)
    out = {(za, zb): g[a, b] for a, za in enumerate(species) for b, zb in enumerate(species) if za <= zb}
    return _centres(r_max, n_bins), out


def rdf_mae(g_a: np.ndarray, g_b: np.ndarray) -> float:
    """Mean over bins of |g_a(r) - g_b(r)| (dimensionless); both on the same bins."""
    return _mean_abs_diff(g_a, g_b)


def distance_histogram(
    positions: np.ndarray,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | bool = False,
    r_max: float = 10.0,
    n_bins: int = 200,
    numbers: np.ndarray | None = None,
    pair: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Interatomic-distance histogram h(r) of one or more frames, as a density (1/Å).

    Every pair distance 0 < d <= r_max (periodic images included, optionally only species pair
    ``pair``) of every frame is pooled; h integrates to 1 over (0, r_max] (all zeros if no pair).

    Returns:
        (bin centres r (n_bins,), h (n_bins,)).
    """
    pos = as_frames(positions)
    cells, pbc_arr = frame_cells(cell, len(pos)), pbc3(pbc)
    edges = _bin_edges(r_max, n_bins)
    nums = None if numbers is None else np.asarray(numbers)
    if pair is not None and nums is None:
        raise ValueError("a species-pair histogram (pair=...) needs numbers")
    counts = np.zeros(n_bins)
    for frame, c in zip(pos, cells, strict=True):
        i, j, d = pair_distances(frame, c, pbc_arr, r_max)
        if pair is not None:
            keep = ((nums[i] == pair[0]) & (nums[j] == pair[1])) | ((nums[i] == pair[1]) & (nums[j] == pair[0]))
            d = d[keep]
        counts += np.histogram(d, bins=edges)[0]
    total = counts.sum()
    h = counts / (total * np.diff(edges)) if total > 0 else counts
    return 0.5 * (edges[1:] + edges[:-1]), h


def histogram_mae(h_a: np.ndarray, h_b: np.ndarray) -> float:
    """h(r)-MAE: mean over bins of |h_a(r) - h_b(r)| (1/Å); both on the same bins."""
    return _mean_abs_diff(h_a, h_b)


def histogram_l1(h_a: np.ndarray, h_b: np.ndarray, r: np.ndarray) -> float:
    """Integrated L1 distance sum |h_a - h_b| dr on uniform bins centred at ``r`` (dimensionless, 0..2)."""
    r = np.asarray(r, dtype=np.float64)
    dr = float(r[1] - r[0]) if len(r) > 1 else 2.0 * float(r[0])
    return _mean_abs_diff(h_a, h_b) * len(r) * dr


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"curves must share their bins: shapes {a.shape} and {b.shape}")
    return float(np.mean(np.abs(a - b)))


BOND_FACTOR = 1.2
"""Two atoms are bonded when closer than this x the sum of their covalent radii (ASE's table)."""


def bond_cutoff(a: int, b: int, factor: float = BOND_FACTOR) -> float:
    """Bond length bound (Å) of species a and b: ``factor`` x (r_cov,a + r_cov,b)."""
    from ase.data import covalent_radii

    return float(factor * (covalent_radii[a] + covalent_radii[b]))


def bonds(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | bool,
          factor: float = BOND_FACTOR) -> dict[str, dict[str, float | None]]:
    """Bonding of every ordered species pair "A-B" over frames: ``coordination``, the mean number of B atoms
    bonded to an A atom (:func:`bond_cutoff`); ``min_distance_A``, the closest A-B approach in any frame (None
    beyond 1.5 x the longest bond cutoff); and ``cutoff_A``. Homopolar bonds (Se-Se in GeSe2) and atoms fusing show here
    before they show in an RDF average."""
    from ase.data import chemical_symbols

    pos = as_frames(positions)
    cells, pbc_arr = frame_cells(cell, len(pos)), pbc3(pbc)
    numbers = np.asarray(numbers)
    species = sorted(set(numbers.tolist()))
    code = np.searchsorted(species, numbers)
    n_s = len(species)
    cut = np.array([[bond_cutoff(a, b, factor) for b in species] for a in species])
    counts = np.zeros((n_s, n_s))
    closest = np.full((n_s, n_s), np.inf)
    for frame, c in zip(pos, cells, strict=True):
        i, j, d = pair_distances(frame, c, pbc_arr, 1.5 * float(cut.max()))
        a, b = code[i], code[j]
        np.minimum.at(closest, (a, b), d)
        bonded = d < cut[a, b]
        np.add.at(counts, (a[bonded], b[bonded]), 1.0)
    n_of = np.bincount(code, minlength=n_s).astype(np.float64)
    out = {}
    for x, za in enumerate(species):
        for y, zb in enumerate(species):
            out[f"{chemical_symbols[za]}-{chemical_symbols[zb]}"] = {
                "coordination": float(counts[x, y] / (n_of[x] * len(pos))),
                "min_distance_A": float(closest[x, y]) if np.isfinite(closest[x, y]) else None,
                "cutoff_A": float(cut[x, y]),
            }
    return out
