-- Renew the leases of tasks a worker still runs (see Tasks.renew_leases): reset the
-- idle time of those still pending on its own consumer, without counting a delivery.
-- In one script, so that a task another worker took over (this one was cut off, or
-- stalled past its lease) stays with that worker instead of being claimed back.
-- KEYS: queue
-- ARGV: consumer group, this worker's consumer, task ids...
-- Returns the ids pending on another consumer. Those pending on none are neither renewed
-- nor returned: acknowledged, by a transition whose reply the worker has not read yet (a
-- connection cut after Redis ran it, the worker retrying it) or by a delete; no other
-- worker runs them.
expect_types({KEYS[1], 'stream'})
local queue, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local held, lost = {}, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', queue, group, id, id, 1, consumer) > 0 then
    held[#held + 1] = id
  elseif #redis.call('XPENDING', queue, group, id, id, 1) > 0 then
    lost[#lost + 1] = id
  end
end
if #held > 0 then
  -- JUSTID: no delivery counted, and no entry sent back.
  held[#held + 1] = 'JUSTID'
  redis.call('XCLAIM', queue, group, consumer, 0, unpack(held))
end
return lost
