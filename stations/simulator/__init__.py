"""OCPP 1.6J charge-point simulator: pure asyncio on the `ocpp` library, no Django.

Public API::

    from stations.simulator import Car, FakeClock, Fleet, Scenario, SimStation

    station = SimStation("SIM-1", "ws://127.0.0.1:8000/ocpp/", "secret", connectors=2)
    await station.start()                      # connect, BootNotification, StatusNotifications
    tx = await station.plug_in(1, Car(battery_kwh=60, soc=20, phases=3), id_tag="CARD1")
    await tx.wait_started()                    # transaction id from the central system
    station.connector(1).energy_register_wh    # readable state: status, offered_a, phases...
    await station.drop_connection(); await station.reconnect()   # offline queue + replay
    await station.unplug(1)
    await station.stop()

`Fleet` runs many stations in one process and can drive a random `Scenario` of cars.
"""

from .car import CATALOGUE, Car, random_car
from .clock import Clock, FakeClock, RealClock
from .fleet import Fleet, Scenario
from .profiles import Profile, ProfileStore
from .station import Connector, SimStation, StationOffline, Stats, Transaction

__all__ = [
    "CATALOGUE",
    "Car",
    "Clock",
    "Connector",
    "FakeClock",
    "Fleet",
    "Profile",
    "ProfileStore",
    "RealClock",
    "Scenario",
    "SimStation",
    "StationOffline",
    "Stats",
    "Transaction",
    "random_car",
]
