-- Take over the tasks pending on a dead worker's consumer of a task stream (its
-- heartbeat stopped: see Tasks.take_over): move up to `count` of them to this worker's
-- consumer, each counting a delivery, and delete the dead consumer once nothing is left
-- pending on it. In one script, so that only tasks still pending on the dead consumer
-- move: two workers that take it over at once each get their own, and a task another
-- worker holds is never taken from it.
-- KEYS: queue
-- ARGV: consumer group, dead consumer, this worker's consumer, count
-- Returns {{id, fields, deliveries}, ...}
expect_types({KEYS[1], 'stream'})
local queue, group, dead = KEYS[1], ARGV[1], ARGV[2]
local pending = redis.call('XPENDING', queue, group, '-', '+', ARGV[4], dead)
local taken = {}
if #pending > 0 then
  local ids, deliveries = {}, {}
  for i, entry in ipairs(pending) do
    ids[i] = entry[1]
    deliveries[entry[1]] = entry[4] + 1
  end
  local found = {}
  for _, entry in ipairs(redis.call('XCLAIM', queue, group, ARGV[3], 0, unpack(ids))) do
    -- Redis 6.2 answers a nil message for an entry deleted while pending.
    if entry and entry[2] then
      found[entry[1]] = true
      taken[#taken + 1] = {entry[1], entry[2], deliveries[entry[1]]}
    end
  end
  for _, id in ipairs(ids) do
    if not found[id] then redis.call('XACK', queue, group, id) end
  end
end
if #redis.call('XPENDING', queue, group, '-', '+', 1, dead) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', queue, group, dead)
end
return taken
