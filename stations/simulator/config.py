"""The configuration keys a simulated charge point knows (OCPP 1.6 section 9)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Key:
    value: str
    readonly: bool = False
    kind: str = "str"  # int | bool | csl | str
    reboot: bool = False  # a change is answered RebootRequired
    hidden: bool = False  # write-only (AuthorizationKey): GetConfiguration shows no value


MEASURANDS = (
    "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Current.Offered,Voltage,SoC"
)


def default_config(connectors: int, *, switch_3to1: bool) -> dict[str, Key]:
    return {
        "AllowOfflineTxForUnknownId": Key("false", kind="bool"),
        "AuthorizationCacheEnabled": Key("false", kind="bool"),
        # The portal's vendor keys (docs/OCPP.md, "Vendor id and keys").
        "AutoCarDetection": Key("false", kind="bool"),
        "ModbusTcpEnabled": Key("false", kind="bool"),
        "AuthorizationKey": Key("", kind="str", hidden=True),
        "AuthorizeRemoteTxRequests": Key("false", kind="bool"),
        "ChargeProfileMaxStackLevel": Key("8", readonly=True, kind="int"),
        "ChargingScheduleAllowedChargingRateUnit": Key("Current,Power", readonly=True),
        "ChargingScheduleMaxPeriods": Key("24", readonly=True, kind="int"),
        "ClockAlignedDataInterval": Key("0", kind="int"),
        "ConnectionTimeOut": Key("60", kind="int"),
        "ConnectorPhaseRotation": Key(
            ",".join(f"{i}.RST" for i in range(connectors + 1)), kind="csl"
        ),
        "ConnectorSwitch3to1PhaseSupported": Key(
            "true" if switch_3to1 else "false", readonly=True, kind="bool"
        ),
        "GetConfigurationMaxKeys": Key("50", readonly=True, kind="int"),
        "HeartbeatInterval": Key("300", kind="int"),
        "LocalAuthorizeOffline": Key("true", kind="bool"),
        "LocalPreAuthorize": Key("false", kind="bool"),
        "MaxChargingProfilesInstalled": Key("10", readonly=True, kind="int"),
        "MeterValueSampleInterval": Key("60", kind="int"),
        "MeterValuesAlignedData": Key("Energy.Active.Import.Register", kind="csl"),
        "MeterValuesSampledData": Key(MEASURANDS, kind="csl"),
        "NumberOfConnectors": Key(str(connectors), readonly=True, kind="int"),
        "ResetRetries": Key("1", kind="int"),
        "SecurityProfile": Key("1", kind="int", reboot=True),
        "StopTransactionOnEVSideDisconnect": Key("true", kind="bool"),
        "StopTransactionOnInvalidId": Key("true", kind="bool"),
        "StopTxnAlignedData": Key("", kind="csl"),
        "StopTxnSampledData": Key("Energy.Active.Import.Register", kind="csl"),
        "SupportedFeatureProfiles": Key(
            "Core,SmartCharging,RemoteTrigger", readonly=True, kind="csl"
        ),
        "TransactionMessageAttempts": Key("3", kind="int"),
        "TransactionMessageRetryInterval": Key("10", kind="int"),
        "UnlockConnectorOnEVSideDisconnect": Key("true", kind="bool"),
        "WebSocketPingInterval": Key("20", kind="int"),
    }


def check_value(key: Key, value: str) -> bool:
    if key.kind == "int":
        return value.isdigit()
    if key.kind == "bool":
        return value.lower() in ("true", "false")
    return len(value) <= 500
