"""How the matcher cuts work into batches: neighbouring regions with requests form one batch (one
solver decides between their riders competing for the same offers), regions apart are batches
of their own, a batch covers a bounded number of regions; and the job queues one batch a group."""

from __future__ import annotations

import h3

from rides import jobs, service
from rides.config import RideConfig
from tests.support.pools import worker_ctx
from tests.support.rides import (
    NEAR_CITY,
    Enqueued,
    across_a_region_border,
    insured_driver,
    new_area,
    offer_body,
    post,
    request_body,
    rider,
)
from tests.support.trust import TrustWorld

SHANGHAI = str(h3.latlng_to_cell(31.2304, 121.4737, 4))


def test_neighbouring_regions_are_one_batch_and_regions_apart_are_not() -> None:
    ring = sorted(str(c) for c in h3.grid_disk(SHANGHAI, 1))
    far = str(h3.latlng_to_cell(39.9042, 116.4074, 4))  # Beijing
    assert sorted(service.region_clusters([far, *ring])) == sorted([ring, [far]])
    # Two cells four apart are two batches, and the centre between them makes a third; the
    # cells of a path from one to the other are one batch.
    apart = sorted(str(c) for c in h3.grid_ring(SHANGHAI, 2))
    first = apart[0]
    opposite = max(apart, key=lambda c: h3.grid_distance(first, c))
    assert h3.grid_distance(first, opposite) == 4
    assert len(service.region_clusters([first, opposite])) == 2
    assert len(service.region_clusters([first, SHANGHAI, opposite])) == 3
    path = [str(c) for c in h3.grid_path_cells(first, opposite)]
    assert service.region_clusters(path) == [sorted(path)]
    assert service.region_clusters([SHANGHAI]) == [[SHANGHAI]]
    assert service.region_clusters([]) == []


def test_a_batch_covers_at_most_the_limit_of_regions_and_every_region_once() -> None:
    disk = [str(c) for c in h3.grid_disk(SHANGHAI, 3)]  # 37 neighbouring cells
    clusters = service.region_clusters(disk)
    assert all(1 <= len(c) <= service.MAX_BATCH_REGIONS for c in clusters)
    assert sorted(r for c in clusters for r in c) == sorted(disk)
    assert len(clusters) == 2


async def test_the_job_queues_riders_of_neighbouring_regions_as_one_batch(
    own_world: TrustWorld,
) -> None:
    world = own_world
    config: RideConfig = world.client.app.state.rides
    west, east = across_a_region_border(new_area(), config)
    _, driver_h = await insured_driver(world)
    await post(world, "/v1/rides/offers", offer_body(world, west), driver_h)
    regions = []
    for side in (west, east):
        _, rider_h = await rider(world)
        await post(world, "/v1/rides/requests", request_body(world, side), rider_h)
        pickup = side.at(NEAR_CITY)
        regions.append(service.region_of(pickup["lat"], pickup["lon"], config))
    redis = Enqueued()
    assert await jobs.match_rides({**worker_ctx(world), "redis": redis}) == 0
    batches = [args for name, args in redis.arguments if name == "match_ride_regions"]
    assert batches == [(sorted(regions),)]
    assert await jobs.match_ride_regions(worker_ctx(world), sorted(regions)) == 2
