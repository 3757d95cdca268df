-- Record an activity's outcome once: ACTIVITY_COMPLETED, or ACTIVITY_FAILED after its
-- last attempt. A late duplicate (another worker already recorded it, or the workflow
-- has closed) is dropped, not appended.
-- The worker may take the queue's next task in the same round trip; when that is this
-- workflow's task and the worker holds the workflow's instance up to entry `after`, the
-- history entries past it come along (at most `page` of them), so the task needs no read.
-- Returns {outcome ('ok', 'duplicate' or 'dropped'), next task or nil, entries}.
-- KEYS: meta, history, the task's stream, activity stream, workflow stream, timers
-- ARGV: workflow id, seq, task id, now (ms), event type, data, consumer group,
--       consumer to take the next task for ('' for none), after ('' for none), page,
--       lease (the timer member of an activity run at once by the worker that
--       scheduled it, '' for none)
local meta, queue, group = KEYS[1], KEYS[3], ARGV[7]
expect_types({meta, 'hash', KEYS[2], 'stream', queue, 'stream', KEYS[5], 'stream',
  KEYS[6], 'zset'})
ack(queue, group, ARGV[3])
if ARGV[11] ~= '' then redis.call('ZREM', KEYS[6], ARGV[11]) end
local outcome = 'ok'
if not open_status(meta) then
  outcome = 'dropped'
elseif redis.call('HDEL', meta, 'a:' .. ARGV[2]) == 0 then
  outcome = 'duplicate'
else
  append_event(KEYS[2], ARGV[5], ARGV[2], ARGV[4], ARGV[6])
  request_workflow_task(meta, KEYS[5], ARGV[1])
end
local next_task = take_next(group, ARGV[8], KEYS[4], KEYS[5])
local entries = {}
if next_task and ARGV[9] ~= '' then
  local fields = next_task[2][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'wf' and fields[i + 1] == ARGV[1] then
      entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[9], '+', 'COUNT', ARGV[10])
    end
  end
end
return {outcome, next_task, entries}
