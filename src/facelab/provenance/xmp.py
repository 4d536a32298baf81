"""Our small XMP packet: the mark as RDF/XML that exiftool, Adobe tools and C2PA readers
understand (IPTC's DigitalSourceType, xmp:CreatorTool, xmp:CreateDate), plus facelab's own
namespace for the fields those schemas lack (model id, tool and version apart).

Parsing takes any packet (other tools write properties as attributes or as elements) and
never trusts it: DTDs are refused before the XML parser sees them (no entity expansion).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from facelab.provenance.mark import Mark

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "facelab": "urn:facelab:provenance:1.0/",
}
MAX_PACKET = 1 << 20  # far above any mark; bounds what a hostile file makes us parse
_FIELDS = {  # Mark field -> property
    "source_type": ("Iptc4xmpExt", "DigitalSourceType"),
    "tool": ("facelab", "Tool"),
    "version": ("facelab", "Version"),
    "model_id": ("facelab", "ModelId"),
    "created": ("xmp", "CreateDate"),
}


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def build_xmp(mark: Mark) -> bytes:
    """The packet as UTF-8, with the xpacket wrapper readers look for."""
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    meta = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(meta, _q("rdf", "RDF"))
    desc = ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    for field, (prefix, name) in _FIELDS.items():
        value = getattr(mark, field)
        if value:
            desc.set(_q(prefix, name), value)
    if mark.tool:
        desc.set(_q("xmp", "CreatorTool"), f"{mark.tool} {mark.version}".strip())
    body = ET.tostring(meta, encoding="unicode")
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            f'{body}\n<?xpacket end="r"?>').encode()


def parse_xmp(packet: bytes) -> Mark | None:
    """The mark in an XMP packet; None when it holds no DigitalSourceType or is not XML."""
    if len(packet) > MAX_PACKET or b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        return None
    try:
        root = ET.fromstring(packet.decode("utf-8"))
    except (ET.ParseError, UnicodeDecodeError, ValueError):
        return None
    values: dict[str, str] = {}
    for desc in root.iter(_q("rdf", "Description")):
        for field, (prefix, name) in _FIELDS.items():
            value = _property(desc, _q(prefix, name))
            if value and field not in values:
                values[field] = value
    if "source_type" not in values:
        return None
    return Mark(**values)


def _property(desc: ET.Element, key: str) -> str | None:
    """A simple property written as an attribute, element text or rdf:resource."""
    if key in desc.attrib:
        return desc.attrib[key].strip()
    el = desc.find(key)
    if el is None:
        return None
    return (el.get(_q("rdf", "resource")) or el.text or "").strip() or None
