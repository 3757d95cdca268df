-- Start a workflow: meta, WORKFLOW_STARTED, a workflow task, indexes. Idempotent on id;
-- the same request run again (a client retrying after a lost reply) is 'started' again.
-- Returns {'started' or 'exists', status}.
-- KEYS: meta, history, queue, started index, owner index (absent when no owner)
-- ARGV: workflow id, now (ms), status index prefix, plan {meta = {k, v, ...}, started = data,
--       carry = whether the first workflow task carries WORKFLOW_STARTED, so that the
--       worker need not read the history}, request id
local meta, history, queue = KEYS[1], KEYS[2], KEYS[3]
local workflow_id, now, index_prefix = ARGV[1], ARGV[2], ARGV[3]
local existing = redis.call('HGET', meta, 'status')
if existing then
  if redis.call('HGET', meta, 'start_request') == ARGV[5] then return {'started', existing} end
  return {'exists', existing}
end
local plan = cmsgpack.unpack(ARGV[4])
local started_id = append_event(history, 'WORKFLOW_STARTED', '0', now, plan.started)
redis.call('HSET', meta, 'created', now, 'updated', now, 'start_request', ARGV[5],
  unpack(plan.meta))
local carried = nil
if plan.carry then
  carried = {'started_id', started_id, 'started_t', now, 'started', plan.started}
end
request_workflow_task(meta, queue, workflow_id, carried)
set_status(meta, index_prefix, workflow_id, nil, 'PENDING', now)
redis.call('ZADD', KEYS[4], now, workflow_id)
if KEYS[5] then redis.call('ZADD', KEYS[5], now, workflow_id) end
return {'started', 'PENDING'}
