"""What the built-in tasks do with values that are missing or of the wrong type."""

from __future__ import annotations

import pytest

from netmon.errors import SnmpEndOfMibError, SnmpMalformedReplyError, SnmpNoSuchError
from netmon.snmp.oids import SYSTEM, name_of, parse_oid
from netmon.snmp.values import Missing, VarBind
from netmon.tasks._values import optional, require, text


def test_missing_values_are_typed_errors_naming_the_object():
    with pytest.raises(SnmpNoSuchError, match=r"^sysName: noSuchInstance$"):
        require(VarBind(SYSTEM.sysName, Missing.NO_SUCH_INSTANCE, "noSuchInstance"), bytes)
    with pytest.raises(SnmpEndOfMibError):
        require(VarBind(SYSTEM.sysName, Missing.END_OF_MIB_VIEW, "endOfMibView"), bytes)


def test_a_value_of_the_wrong_type_is_a_malformed_reply():
    with pytest.raises(SnmpMalformedReplyError, match="expected int, got OctetString"):
        require(VarBind(SYSTEM.sysUpTime, b"soon", "OctetString"), int)


def test_optional_and_text_tolerate_absence_and_bad_utf8():
    assert optional(None, int) is None
    assert optional(VarBind(SYSTEM.sysName, Missing.NO_SUCH_OBJECT, "noSuchObject"), int) is None
    assert text(VarBind(SYSTEM.sysName, b"sw\xff1", "OctetString")) == "sw\ufffd1"


def test_oids_have_names_and_parse_back():
    assert name_of(SYSTEM.sysName) == "sysName"
    assert name_of((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 12)) == "ifHCInOctets.12"
    assert parse_oid(".1.3.6.1.2.1.1.5.0") == SYSTEM.sysName
    with pytest.raises(ValueError, match="not a numeric OID"):
        parse_oid("sysName.0")
