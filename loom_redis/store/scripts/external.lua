-- Deliver an external event to an open workflow (a signal, a cancel request) and
-- request a workflow task for it.
-- KEYS: meta, history, queue
-- ARGV: workflow id, now (ms), event type, data, once-field ('' or a meta field that
--       makes the event happen at most once, such as the cancel request)
local meta = KEYS[1]
expect_types({meta, 'hash', KEYS[2], 'stream', KEYS[3], 'stream'})
local status, seen = open_status(meta)
if not seen then return {'missing', ''} end
if not status then return {'closed', seen} end
if ARGV[5] ~= '' and redis.call('HSETNX', meta, ARGV[5], ARGV[2]) == 0 then
  return {'duplicate', status}
end
append_event(KEYS[2], ARGV[3], '0', ARGV[2], ARGV[4])
request_workflow_task(meta, KEYS[3], ARGV[1])
redis.call('HSET', meta, 'updated', ARGV[2])
return {'ok', status}
