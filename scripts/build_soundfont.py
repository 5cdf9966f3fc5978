"""Rebuild the shipped piano SoundFont from a Debian General MIDI SoundFont.

    uv run python scripts/build_soundfont.py                      # FluidR3 -> resources/soundfonts/
    uv run python scripts/build_soundfont.py --source X.sf3 --output Y.sf3 --bank 0 --program 0

The SoundFont 2 file is a RIFF 'sfbk' form: an INFO list (metadata), an 'sdta' list (the raw
sample data 'smpl', optionally the 24-bit low bytes 'sm24') and a 'pdta' list of nine fixed-size
record tables (presets -> preset zones -> generators/modulators -> instruments -> instrument
zones -> generators/modulators -> sample headers). This script keeps one preset (bank 0,
program 0 by default) together with the instruments, samples and sample data it references,
renumbers every cross-reference and writes a new, valid SoundFont. SF3 files (MuseScore's
Ogg-Vorbis-compressed variant) are handled too: their sample start/end are byte offsets of an
Ogg stream inside 'smpl' and their loop points are relative to the decoded sample, so only
start/end move.

Why FluidR3 and not MuseScore General by default: TinySoundFont (our renderer) plays
MuseScore General's "Grand Piano" with a broken velocity response (velocities ~80-105 come out
~10x quieter than velocity 70; it relies on features TinySoundFont does not implement), while
FluidR3's "Yamaha Grand Piano" is monotonic in velocity and its subset is a modest size.
Run with --report to print those figures for any source.
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
DEFAULT_OUTPUT = REPO_ROOT / "resources" / "soundfonts" / "piano.sf2"

# Record layouts of the nine 'pdta' sub-chunks (SoundFont 2.04 spec, section 7).
PHDR = struct.Struct("<20sHHHIII")  # name, preset, bank, bag index, library, genre, morphology
BAG = struct.Struct("<HH")  # generator index, modulator index
MOD = struct.Struct("<HHhHH")  # src, dest, amount, amount src, transform
GEN = struct.Struct("<HH")  # operator, raw 16-bit amount (signed or a pair of bytes)
INST = struct.Struct("<20sH")  # name, bag index
SHDR = struct.Struct("<20sIIIIIBbHH")  # name, start, end, loop start/end, rate, key, cents, link, type
GEN_INSTRUMENT = 41
GEN_SAMPLE_ID = 53
SAMPLE_TYPE_ROM = 0x8000
SAMPLE_TYPE_VORBIS = 0x10  # SF3: sample data is an Ogg Vorbis stream
SF2_SAMPLE_PADDING = 46  # the spec requires >= 46 zero sample points after every sample


class SoundFontFormatError(ValueError):
    """The source file is not a SoundFont this script can subset."""


@dataclass
class SoundFontData:
    info: list[tuple[bytes, bytes]]
    smpl: bytes
    sm24: bytes | None
    presets: list[tuple]  # PHDR tuples, terminal record included
    pbag: list[tuple]
    pmod: list[tuple]
    pgen: list[tuple]
    inst: list[tuple]
    ibag: list[tuple]
    imod: list[tuple]
    igen: list[tuple]
    shdr: list[tuple]


def _chunks(data: bytes, start: int, end: int):
    """Yield (id, body) for the RIFF chunks in data[start:end] (bodies are word-aligned)."""
    pos = start
    while pos + 8 <= end:
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body_start = pos + 8
        if body_start + size > end:
            raise SoundFontFormatError(f"chunk {chunk_id!r} runs past the end of its container")
        yield chunk_id, data[body_start : body_start + size]
        pos = body_start + size
        # RIFF pads odd-sized bodies to a word, but some writers (Polyphone's SF3 export, e.g.
        # Debian's MuseScore_General.sf3) leave the pad byte out: follow whichever reads as a chunk.
        if size & 1 and not (_chunk_fits(data, pos, end) and not _chunk_fits(data, pos + 1, end)):
            pos += 1


def _chunk_fits(data: bytes, pos: int, end: int) -> bool:
    """Whether a plausible chunk (printable id, body inside the container) starts at pos."""
    if pos + 8 > end:
        return False
    chunk_id, size = struct.unpack_from("<4sI", data, pos)
    return all(32 <= c < 127 for c in chunk_id) and pos + 8 + size <= end


def _records(body: bytes, layout: struct.Struct, name: str) -> list[tuple]:
    if len(body) % layout.size:
        raise SoundFontFormatError(f"'{name}' chunk size {len(body)} is not a multiple of {layout.size}")
    return [layout.unpack_from(body, i) for i in range(0, len(body), layout.size)]


def parse_soundfont(data: bytes) -> SoundFontData:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise SoundFontFormatError("not a SoundFont (missing RIFF 'sfbk' header)")
    lists: dict[bytes, bytes] = {}
    riff_end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    for chunk_id, body in _chunks(data, 12, riff_end):
        if chunk_id == b"LIST":
            lists[body[:4]] = body[4:]
    for required in (b"INFO", b"sdta", b"pdta"):
        if required not in lists:
            raise SoundFontFormatError(f"SoundFont has no '{required.decode()}' list")
    info = list(_chunks(lists[b"INFO"], 0, len(lists[b"INFO"])))
    sdta = dict(_chunks(lists[b"sdta"], 0, len(lists[b"sdta"])))
    pdta = dict(_chunks(lists[b"pdta"], 0, len(lists[b"pdta"])))
    layouts = {b"phdr": PHDR, b"pbag": BAG, b"pmod": MOD, b"pgen": GEN, b"inst": INST,
               b"ibag": BAG, b"imod": MOD, b"igen": GEN, b"shdr": SHDR}
    tables = {}
    for key, layout in layouts.items():
        if key not in pdta:
            raise SoundFontFormatError(f"SoundFont has no '{key.decode()}' chunk")
        tables[key.decode()] = _records(pdta[key], layout, key.decode())
    return SoundFontData(info=info, smpl=sdta.get(b"smpl", b""), sm24=sdta.get(b"sm24"),
                         presets=tables["phdr"], pbag=tables["pbag"], pmod=tables["pmod"],
                         pgen=tables["pgen"], inst=tables["inst"], ibag=tables["ibag"],
                         imod=tables["imod"], igen=tables["igen"], shdr=tables["shdr"])


def _zones(bags: list[tuple], first_bag: int, end_bag: int, gens: list[tuple], mods: list[tuple]):
    """The (generators, modulators) of bags [first_bag, end_bag)."""
    zones = []
    for b in range(first_bag, end_bag):
        gen_lo, mod_lo = bags[b]
        gen_hi, mod_hi = bags[b + 1]
        zones.append((list(gens[gen_lo:gen_hi]), list(mods[mod_lo:mod_hi])))
    return zones


def subset(sf: SoundFontData, bank: int, program: int, name: str, comment: str) -> bytes:
    """A complete SoundFont file holding only preset (bank, program) of `sf`."""
    preset_index = next((i for i, p in enumerate(sf.presets[:-1]) if (p[2], p[1]) == (bank, program)), None)
    if preset_index is None:
        raise SoundFontFormatError(f"the SoundFont has no preset bank {bank} program {program}")
    preset = sf.presets[preset_index]
    preset_zones = _zones(sf.pbag, preset[3], sf.presets[preset_index + 1][3], sf.pgen, sf.pmod)

    # Instruments referenced by the preset, in first-use order, and their zones.
    inst_map: dict[int, int] = {}
    for gens, _ in preset_zones:
        for op, amount in gens:
            if op == GEN_INSTRUMENT and amount not in inst_map:
                inst_map[amount] = len(inst_map)
    inst_zones = {old: _zones(sf.ibag, sf.inst[old][1], sf.inst[old + 1][1], sf.igen, sf.imod)
                  for old in inst_map}

    # Samples referenced by those instruments plus their stereo partners (wSampleLink).
    sample_map: dict[int, int] = {}
    pending = [amount for zones in inst_zones.values() for gens, _ in zones
               for op, amount in gens if op == GEN_SAMPLE_ID]
    while pending:
        old = pending.pop(0)
        if old in sample_map:
            continue
        sample_map[old] = len(sample_map)
        header = sf.shdr[old]
        if header[9] & SAMPLE_TYPE_ROM:
            raise SoundFontFormatError(f"sample {header[0]!r} lives in ROM; cannot subset")
        if header[9] & 0x0E and header[8] < len(sf.shdr) - 1:  # right/left/linked: keep partner
            pending.append(header[8])

    # Sample data: copy each sample's range, renumber its offsets.
    smpl, sm24 = bytearray(), bytearray()
    new_headers = []
    for old in sample_map:
        hname, start, end, loop_start, loop_end, rate, key, cents, link, stype = sf.shdr[old]
        if stype & SAMPLE_TYPE_VORBIS:
            # SF3: start/end are byte offsets into 'smpl'; loop points are relative to the
            # decoded sample, so they stay as they are.
            new_start = len(smpl)
            smpl += sf.smpl[start:end]
            new_end = len(smpl)
            smpl += b"\0" * (len(smpl) & 1)
            header = (hname, new_start, new_end, loop_start, loop_end)
        else:
            if not (start <= end <= len(sf.smpl) // 2):
                raise SoundFontFormatError(f"sample {hname!r} points outside the sample data")
            new_start = len(smpl) // 2
            smpl += sf.smpl[2 * start : 2 * end] + b"\0\0" * SF2_SAMPLE_PADDING
            if sf.sm24 is not None:
                sm24 += sf.sm24[start:end] + b"\0" * SF2_SAMPLE_PADDING
            shift = new_start - start
            header = (hname, new_start, new_start + (end - start), loop_start + shift, loop_end + shift)
        new_link = sample_map.get(link, 0) if stype & 0x0E else link
        new_headers.append(header + (rate, key, cents, new_link, stype))
    new_headers.append((b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0))

    def remap(zones, op_to_map):
        bags, gens, mods = [], [], []
        for zone_gens, zone_mods in zones:
            bags.append((len(gens), len(mods)))
            gens += [(op, op_to_map[op][amount] if op in op_to_map else amount) for op, amount in zone_gens]
            mods += zone_mods
        return bags, gens, mods

    ibag, igen, imod, inst_records = [], [], [], []
    for old in inst_map:
        bags, gens, mods = remap(inst_zones[old], {GEN_SAMPLE_ID: sample_map})
        inst_records.append((sf.inst[old][0], len(ibag)))
        ibag += [(g + len(igen), m + len(imod)) for g, m in bags]
        igen += gens
        imod += mods
    inst_records.append((b"EOI", len(ibag)))
    ibag.append((len(igen), len(imod)))
    igen.append((0, 0))
    imod.append((0, 0, 0, 0, 0))

    pbag, pgen, pmod = remap(preset_zones, {GEN_INSTRUMENT: inst_map})
    phdr = [preset[:3] + (0,) + preset[4:], (b"EOP", 0, 0, len(pbag), 0, 0, 0)]
    pbag.append((len(pgen), len(pmod)))
    pgen.append((0, 0))
    pmod.append((0, 0, 0, 0, 0))

    info = _build_info(sf.info, name, comment)
    sdta = _chunk(b"smpl", bytes(smpl)) + (_chunk(b"sm24", bytes(sm24)) if sf.sm24 is not None else b"")
    pdta = b"".join(_chunk(cid, b"".join(layout.pack(*r) for r in records)) for cid, layout, records in (
        (b"phdr", PHDR, phdr), (b"pbag", BAG, pbag), (b"pmod", MOD, pmod), (b"pgen", GEN, pgen),
        (b"inst", INST, inst_records), (b"ibag", BAG, ibag), (b"imod", MOD, imod),
        (b"igen", GEN, igen), (b"shdr", SHDR, new_headers)))
    body = b"sfbk" + _chunk(b"LIST", b"INFO" + info) + _chunk(b"LIST", b"sdta" + sdta) \
        + _chunk(b"LIST", b"pdta" + pdta)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def _zstr(text: str) -> bytes:
    """INFO strings: zero-terminated, padded to an even length."""
    raw = text.encode("ascii", "replace") + b"\0"
    return raw + b"\0" * (len(raw) & 1)


def _build_info(source_info: list[tuple[bytes, bytes]], name: str, comment: str) -> bytes:
    kept = {cid: body for cid, body in source_info if cid in (b"ifil", b"isng", b"ICOP", b"IENG", b"ICRD")}
    out = [_chunk(b"ifil", kept.get(b"ifil", struct.pack("<HH", 2, 1))),
           _chunk(b"isng", kept.get(b"isng", _zstr("EMU8000"))),
           _chunk(b"INAM", _zstr(name))]
    for cid in (b"ICRD", b"IENG", b"ICOP"):
        if cid in kept:
            out.append(_chunk(cid, kept[cid]))
    out.append(_chunk(b"ICMT", _zstr(comment)))
    out.append(_chunk(b"ISFT", _zstr("SMART Studio scripts/build_soundfont.py")))
    return b"".join(out)


def velocity_report(path: Path, key: int = 60) -> str:
    """RMS of the first half second of `key` at several velocities (checks velocity response)."""
    import numpy as np
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=16000)
    sfid = synth.sfload(str(path))
    synth.program_select(0, sfid, 0, 0)
    figures = []
    for velocity in range(20, 128, 15):
        synth.sounds_off()
        synth.generate(1000)
        synth.noteon(0, key, velocity)
        audio = np.frombuffer(synth.generate(8000), dtype=np.float32)
        figures.append(f"v{velocity}:{np.sqrt(np.mean(audio ** 2)):.4f}")
    return " ".join(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--bank", type=int, default=0)
    parser.add_argument("--program", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="print size and velocity response")
    args = parser.parse_args(argv)
    try:
        source = parse_soundfont(args.source.read_bytes())
    except (OSError, SoundFontFormatError) as exc:
        print(f"error: {args.source}: {exc}", file=sys.stderr)
        return 1
    preset_name = next((p[0].split(b"\0")[0].decode("ascii", "replace") for p in source.presets
                        if (p[2], p[1]) == (args.bank, args.program)), "?")
    comment = (f"Preset '{preset_name}' (bank {args.bank}, program {args.program}) extracted from "
               f"{args.source.name} (MIT license, see LICENSE next to this file).")
    try:
        data = subset(source, args.bank, args.program, name=f"SMART Studio Piano ({preset_name})",
                      comment=comment)
    except SoundFontFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(args.output.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.output)
    print(f"wrote {args.output} ({len(data) / 1e6:.1f} MB): '{preset_name}' from {args.source}")
    if args.report:
        print("velocity response (RMS at key 60):", velocity_report(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
