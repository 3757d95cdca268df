-- Record an activity's outcome once: ACTIVITY_COMPLETED, or ACTIVITY_FAILED after its
-- last attempt. A late duplicate (another worker already recorded it, or the workflow
-- has closed) is dropped, not appended.
-- KEYS: meta, history, queue
-- ARGV: workflow id, seq, task id, now (ms), event type, data, consumer group
local meta = KEYS[1]
ack(KEYS[3], ARGV[7], ARGV[3])
if not open_status(meta) then return 'dropped' end
if redis.call('HDEL', meta, 'a:' .. ARGV[2]) == 0 then return 'duplicate' end
append_event(KEYS[2], ARGV[5], ARGV[2], ARGV[4], ARGV[6])
request_workflow_task(meta, KEYS[3], ARGV[1])
return 'ok'
