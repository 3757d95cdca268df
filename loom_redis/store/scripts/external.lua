-- Deliver an external event to an open workflow (a signal, a cancel request) and
-- request a workflow task for it.
-- A request id makes a signal happen at most once: the ids delivered are kept in a zset
-- scored by delivery time, at most ONCE_KEEP of them and none older than ONCE_KEEP_MS,
-- so that the zset of a long-lived workflow stays bounded (a client's retry of a lost
-- reply comes within seconds).
-- KEYS: meta, history, queue, request ids
-- ARGV: workflow id, now (ms), event type, data, once-field ('' or a meta field that
--       makes the event happen at most once, such as the cancel request), request id
--       ('' for none)
local meta, requests, now = KEYS[1], KEYS[4], tonumber(ARGV[2])
expect_types({meta, 'hash', KEYS[2], 'stream', KEYS[3], 'stream', requests, 'zset'})
local status, seen = open_status(meta)
if not seen then return {'missing', ''} end
if not status then return {'closed', seen} end
if ARGV[5] ~= '' and redis.call('HSETNX', meta, ARGV[5], ARGV[2]) == 0 then
  return {'duplicate', status}
end
if ARGV[6] ~= '' then
  local kept_since = now - ONCE_KEEP_MS
  local seen_at = tonumber(redis.call('ZSCORE', requests, ARGV[6]))
  if seen_at and seen_at >= kept_since then return {'duplicate', status} end
  -- ZADD first: a full server (maxmemory) refuses a script's first write that adds, but
  -- not the writes after one that only removes (such as the trims below).
  redis.call('ZADD', requests, now, ARGV[6])
  redis.call('ZREMRANGEBYSCORE', requests, '-inf', '(' .. kept_since)
  redis.call('ZREMRANGEBYRANK', requests, 0, -(ONCE_KEEP + 1))
end
append_event(KEYS[2], ARGV[3], '0', ARGV[2], ARGV[4])
request_workflow_task(meta, KEYS[3], ARGV[1])
redis.call('HSET', meta, 'updated', ARGV[2])
return {'ok', status}
