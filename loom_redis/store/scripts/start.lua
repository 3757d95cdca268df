-- Start a workflow: meta, WORKFLOW_STARTED, a workflow task, indexes. Idempotent on id;
-- the same request run again (a client retrying after a lost reply) is 'started' again.
-- Returns {'started' or 'exists', status}.
-- KEYS: meta, history, queue, started index, owner index (absent when no owner)
-- ARGV: workflow id, now (ms), status index prefix, WORKFLOW_STARTED data, request id,
--       '1' if the first workflow task carries WORKFLOW_STARTED (so that the worker need
--       not read the history), meta field, value, ...
local meta, history, queue = KEYS[1], KEYS[2], KEYS[3]
local workflow_id, now = ARGV[1], ARGV[2]
expect_types({meta, 'hash', history, 'stream', queue, 'stream', KEYS[4], 'zset',
  ARGV[3] .. 'PENDING', 'zset'})
if KEYS[5] then expect_types({KEYS[5], 'zset'}) end
local existing = redis.call('HGET', meta, 'status')
if existing then
  if redis.call('HGET', meta, 'start_request') == ARGV[5] then return {'started', existing} end
  return {'exists', existing}
end
local started_id = append_event(history, 'WORKFLOW_STARTED', '0', now, ARGV[4])
-- A new workflow: its status, its queued-task flag, its history length, its waiter (the
-- client that starts it may wait for its result: the close notice is pushed for it) and
-- its meta in one write.
redis.call('HSET', meta, 'status', 'PENDING', 'wft', '1', 'waited', '1', 'hlen', 1,
  'created', now, 'updated', now, 'start_request', ARGV[5], unpack(ARGV, 7))
if ARGV[6] == '1' then
  redis.call('XADD', queue, '*', 'k', 'w', 'wf', workflow_id,
    'started_id', started_id, 'started_t', now, 'started', ARGV[4])
else
  redis.call('XADD', queue, '*', 'k', 'w', 'wf', workflow_id)
end
redis.call('ZADD', ARGV[3] .. 'PENDING', now, workflow_id)
redis.call('ZADD', KEYS[4], now, workflow_id)
if KEYS[5] then redis.call('ZADD', KEYS[5], now, workflow_id) end
return {'started', 'PENDING'}
