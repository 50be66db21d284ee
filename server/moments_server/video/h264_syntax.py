"""H.264 parameter sets and slice headers, as much as the reference analysis (video/h264_refs.py) needs: no
macroblock is parsed. `StreamParser.packet` reads one packet's NAL units (MP4/MOV length-prefixed, or Annex B
start codes) into a `Picture` (its slices' types, frame_num, POC fields, reference list sizes and
modifications, and marking). What the analysis does not support raises `Unsupported` (see h264_refs.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


class Unsupported(Exception):
    """The stream uses something this analysis does not model."""


class _Bits:
    """An RBSP bit reader (7.2: u(n), ue(v), se(v)); the bits are one Python int."""

    __slots__ = ("n", "pos", "v")

    def __init__(self, rbsp: bytes) -> None:
        self.v, self.n, self.pos = int.from_bytes(rbsp, "big"), len(rbsp) * 8, 0

    def u(self, k: int) -> int:
        self.pos += k
        if self.pos > self.n:
            raise EOFError
        return (self.v >> (self.n - self.pos)) & ((1 << k) - 1)

    def ue(self) -> int:  # 9.1
        left = self.n - self.pos
        zeros = left - (self.v & ((1 << left) - 1)).bit_length()
        if zeros >= left or zeros > 31:
            raise EOFError
        return self.u(2 * zeros + 1) - 1

    def se(self) -> int:  # 9.1.1
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes | memoryview) -> bytes:
    """The NAL unit's payload without its header byte and emulation prevention bytes (7.4.1)."""
    return bytes(nal[1:]).replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True)
class Sps:
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    max_num_ref_frames: int
    chroma_array_type: int


@dataclass(frozen=True)
class Pps:
    sps_id: int
    bottom_field_poc: bool
    num_ref_idx_default: tuple[int, int]
    weighted_pred: bool
    weighted_bipred_idc: int
    redundant_pic_cnt: bool


def parse_sps(rbsp: bytes) -> tuple[int, Sps]:
    """7.3.2.1.1, up to frame_mbs_only_flag."""
    b = _Bits(rbsp)
    profile = b.u(8)
    b.u(16)  # constraint flags, level_idc
    sps_id = b.ue()
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = b.ue()
        if chroma_format == 3 and b.u(1):
            raise Unsupported("separate colour planes")
        b.ue(), b.ue(), b.u(1)  # bit depths, qpprime_y_zero_transform_bypass_flag
        if b.u(1):  # seq_scaling_matrix_present_flag: skip the lists (7.3.2.1.1.1)
            for i in range(8 if chroma_format != 3 else 12):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    log2_max_frame_num = b.ue() + 4
    poc_type = b.ue()
    log2_max_poc_lsb = b.ue() + 4 if poc_type == 0 else 0
    if poc_type == 1:
        raise Unsupported("picture order count type 1")
    max_refs = b.ue()
    b.u(1), b.ue(), b.ue()  # gaps_in_frame_num_value_allowed_flag, picture size in macroblocks
    if not b.u(1):
        raise Unsupported("interlaced coding (frame_mbs_only_flag = 0)")
    return sps_id, Sps(log2_max_frame_num, poc_type, log2_max_poc_lsb, max_refs, chroma_format)


def parse_pps(rbsp: bytes) -> tuple[int, Pps]:
    """7.3.2.2, up to redundant_pic_cnt_present_flag."""
    b = _Bits(rbsp)
    pps_id, sps_id = b.ue(), b.ue()
    b.u(1)  # entropy_coding_mode_flag
    bottom_field_poc = bool(b.u(1))
    if b.ue():
        raise Unsupported("slice groups")
    defaults = (b.ue() + 1, b.ue() + 1)
    weighted_pred, bipred = bool(b.u(1)), b.u(2)
    b.se(), b.se(), b.se(), b.u(1), b.u(1)  # QPs, chroma offset, deblocking control, constrained intra
    return pps_id, Pps(sps_id, bottom_field_poc, defaults, weighted_pred, bipred, bool(b.u(1)))


P_SLICE, B_SLICE, I_SLICE = 0, 1, 2  # slice_type % 5 (table 7-6); SP and SI (3, 4) are not supported


@dataclass(frozen=True)
class Slice:
    kind: int
    active: tuple[int, int]  # num_ref_idx_l0/l1_active (0 where the list is not used)
    mods: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]  # (idc, abs_diff_pic_num_minus1)


@dataclass(slots=True)
class Picture:
    """One packet's picture: what reference marking and list construction need."""

    sps: Sps
    idr: bool
    ref: bool  # nal_ref_idc != 0
    frame_num: int
    poc_lsb: int
    delta_poc_bottom: int
    mmco: tuple[int, ...] | None  # None: sliding window; else the difference_of_pic_nums_minus1 of each MMCO 1
    slices: list[Slice] = field(default_factory=list)
    keep_sending: bool = False  # holds something the decoder must see (parameter sets, recovery point...)
    first: bool = False  # the slice starts the picture (first_mb_in_slice = 0)


def _mods(b: _Bits) -> tuple[tuple[int, int], ...]:
    """ref_pic_list_modification() for one list (7.3.3.1)."""
    out: list[tuple[int, int]] = []
    if b.u(1):
        while (idc := b.ue()) != 3:
            if idc > 1:
                raise Unsupported("long-term or inter-view reference list modification")
            out.append((idc, b.ue()))
    return tuple(out)


def _skip_weights(b: _Bits, sps: Sps, active: tuple[int, int], kind: int) -> None:
    """pred_weight_table() (7.3.3.2): parsed only to reach dec_ref_pic_marking()."""
    b.ue()
    if sps.chroma_array_type:
        b.ue()
    for n in active[: 2 if kind == B_SLICE else 1]:
        for _ in range(n):
            if b.u(1):
                b.se(), b.se()
            if sps.chroma_array_type and b.u(1):
                b.se(), b.se(), b.se(), b.se()


def parse_slice(rbsp: bytes, nal_type: int, ref_idc: int, spss: dict[int, Sps], ppss: dict[int, Pps]) -> Picture:
    """slice_header() (7.3.3) of a frame picture, through dec_ref_pic_marking() (7.3.3.3)."""
    b = _Bits(rbsp)
    first_mb = b.ue()
    kind = b.ue() % 5
    if kind > I_SLICE:
        raise Unsupported("SP/SI slices")
    pps = ppss.get(b.ue())
    sps = spss.get(pps.sps_id) if pps else None
    if pps is None or sps is None:
        raise Unsupported("a slice refers to a parameter set not seen")
    frame_num = b.u(sps.log2_max_frame_num)
    idr = nal_type == 5
    if idr:
        b.ue()  # idr_pic_id
    poc_lsb = delta_bottom = 0
    if sps.poc_type == 0:
        poc_lsb = b.u(sps.log2_max_poc_lsb)
        if pps.bottom_field_poc:
            delta_bottom = b.se()
    if pps.redundant_pic_cnt and b.ue():
        raise Unsupported("redundant pictures")
    active = (0, 0)
    if kind == B_SLICE:
        b.u(1)  # direct_spatial_mv_pred_flag
    if kind != I_SLICE:
        active = pps.num_ref_idx_default if kind == B_SLICE else (pps.num_ref_idx_default[0], 0)
        if b.u(1):  # num_ref_idx_active_override_flag
            active = (b.ue() + 1, b.ue() + 1 if kind == B_SLICE else 0)
    mods = (_mods(b) if kind != I_SLICE else (), _mods(b) if kind == B_SLICE else ())
    if (pps.weighted_pred and kind == P_SLICE) or (pps.weighted_bipred_idc == 1 and kind == B_SLICE):
        _skip_weights(b, sps, active, kind)
    mmco: tuple[int, ...] | None = None
    if ref_idc:
        if idr:
            b.u(1)  # no_output_of_prior_pics_flag
            if b.u(1):
                raise Unsupported("long-term reference pictures")
        elif b.u(1):  # adaptive_ref_pic_marking_mode_flag
            diffs = []
            while op := b.ue():
                if op != 1:
                    raise Unsupported(f"memory management control operation {op}")
                diffs.append(b.ue())
            mmco = tuple(diffs)
    pic = Picture(sps, idr, bool(ref_idc), frame_num, poc_lsb, delta_bottom, mmco)
    pic.slices.append(Slice(kind, active, mods))
    if first_mb == 0:
        pic.first = True
    return pic


def nal_units(data: bytes | memoryview, length_size: int) -> Iterator[memoryview]:
    """The NAL units of a packet: length-prefixed (avcC, `length_size` bytes) or, with 0, Annex B."""
    mv = memoryview(data)
    if length_size:
        i, n = 0, len(mv)
        while i + length_size <= n:
            size = int.from_bytes(mv[i : i + length_size], "big")
            i += length_size
            if size == 0 or i + size > n:
                raise Unsupported("a NAL unit runs past its packet")
            yield mv[i : i + size]
            i += size
        return
    raw = bytes(mv)
    starts = []
    i = raw.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = raw.find(b"\x00\x00\x01", i + 3)
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(raw)
        while end > s and raw[end - 1] == 0:  # a zero_byte of the next start code, trailing zeros
            end -= 1
        yield mv[s:end]


_HEAD = 96  # slice headers without a weight table fit; a longer one is read again from the whole NAL unit


class StreamParser:
    """Parameter sets seen so far (from the extradata, then in-band) and each packet's picture."""

    def __init__(self, extradata: bytes | None) -> None:
        self.spss: dict[int, Sps] = {}
        self.ppss: dict[int, Pps] = {}
        self._slices: dict[Slice, Slice] = {}
        self.length_size = 0
        if extradata and extradata[0] == 1:  # avcC (ISO 14496-15 5.3.3.1)
            if len(extradata) < 7:
                raise Unsupported("a short avcC record")
            self.length_size = (extradata[4] & 3) + 1
            i, sets = 6, list[bytes]()
            for count_mask in (0x1F, 0xFF):  # SPS, then PPS
                count = extradata[i - 1] & count_mask
                for _ in range(count):
                    size = int.from_bytes(extradata[i : i + 2], "big")
                    sets.append(extradata[i + 2 : i + 2 + size])
                    i += 2 + size
                i += 1
            for ps in sets:
                self._parameter_set(ps)
        elif extradata:
            for nal in nal_units(extradata, 0):
                self._parameter_set(nal)

    def _parameter_set(self, nal: bytes | memoryview) -> None:
        kind = nal[0] & 31
        try:
            if kind == 7:
                sps_id, sps = parse_sps(_rbsp(nal))
                self.spss[sps_id] = sps
            elif kind == 8:
                pps_id, pps = parse_pps(_rbsp(nal))
                self.ppss[pps_id] = pps
        except EOFError as e:
            raise Unsupported("a truncated parameter set") from e

    def packet(self, data: bytes | memoryview) -> Picture:
        pic: Picture | None = None
        keep = False
        for nal in nal_units(data, self.length_size):
            if not len(nal) or nal[0] & 0x80:
                raise Unsupported("a malformed NAL unit")
            kind, ref_idc = nal[0] & 31, nal[0] >> 5
            if kind in (1, 5):
                try:
                    try:
                        s = parse_slice(_rbsp(nal[:_HEAD]), kind, ref_idc, self.spss, self.ppss)
                    except EOFError:
                        s = parse_slice(_rbsp(nal), kind, ref_idc, self.spss, self.ppss)
                except EOFError as e:
                    raise Unsupported("a truncated slice header") from e
                s.slices[0] = self._slices.setdefault(s.slices[0], s.slices[0])  # (most are alike: share them)
                if s.first == (pic is not None):
                    raise Unsupported("a packet that does not hold one whole picture")
                if pic is None:
                    pic = s
                elif (s.frame_num, s.idr, s.ref, s.poc_lsb) != (pic.frame_num, pic.idr, pic.ref, pic.poc_lsb):
                    raise Unsupported("slices of different pictures in one packet")
                else:
                    pic.slices.append(s.slices[0])
            elif kind in (7, 8):
                self._parameter_set(nal)
                keep = True
            elif kind == 6:
                keep = keep or _recovery_point(_rbsp(nal))
            elif kind not in (9, 12):  # access unit delimiter, filler
                if kind in (2, 3, 4, 13, 14, 15, 19, 20, 21):
                    raise Unsupported(f"NAL unit type {kind}")
                keep = True
        if pic is None:
            raise Unsupported("a packet without a picture")
        pic.keep_sending = keep
        return pic


def _recovery_point(rbsp: bytes) -> bool:
    """Whether an SEI NAL unit holds a recovery point (7.3.2.3.1; payload type 6), which steers FFmpeg."""
    i, n = 0, len(rbsp)
    while i < n and rbsp[i] != 0x80:
        kind = size = 0
        while i < n and rbsp[i] == 0xFF:
            kind, i = kind + 255, i + 1
        if i >= n:
            return True
        kind, i = kind + rbsp[i], i + 1
        while i < n and rbsp[i] == 0xFF:
            size, i = size + 255, i + 1
        if i >= n:
            return True
        size, i = size + rbsp[i], i + 1
        if kind == 6:
            return True
        i += size
    return False
