-- Fire one due timer member: a durable timer (TIMER_FIRED), an activity retry (the task
-- goes back to its queue), a suspended workflow's retry, or a workflow task handed back
-- by a worker that does not register its workflow (the task goes back to its queue). Removing the member is the
-- claim, so two sweepers never fire the same member twice.
-- KEYS: timers, meta, history, queue
-- ARGV: member (msgpack {kind, workflow id, queue, seq, task fields}, of at most
--       MAX_TASK_FIELDS task fields: loom_redis.store checks it), now (ms)
expect_types({KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'stream', KEYS[4], 'stream'})
local timer = cmsgpack.unpack(ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 'gone' end
local meta = KEYS[2]
if not open_status(meta) then return 'dropped' end
local kind, workflow_id, seq = timer[1], timer[2], timer[4]
if kind == 'timer' then
  if redis.call('HDEL', meta, 't:' .. seq) == 0 then return 'duplicate' end
  append_event(KEYS[3], 'TIMER_FIRED', seq, ARGV[2], '')
  request_workflow_task(meta, KEYS[4], workflow_id)
elseif kind == 'retry' then
  if redis.call('HGET', meta, 'a:' .. seq) ~= '1' then return 'duplicate' end
  redis.call('XADD', KEYS[4], '*', unpack(timer[5]))
elseif kind == 'resume' then
  redis.call('HSET', meta, 'wft', '1')
  redis.call('XADD', KEYS[4], '*', 'k', 'w', 'wf', workflow_id)
elseif kind == 'requeue' then
  redis.call('XADD', KEYS[4], '*', unpack(timer[5]))
end
return 'ok'
