-- Commit a workflow task: append its events, enqueue its activities, add its timers,
-- update meta and indexes, acknowledge the task. The history length the worker read
-- is the fencing token: if the history moved since, nothing is written.
-- A commit holds one plan, or two when the worker ran the first activity the task
-- scheduled at once: the second records its outcome and what the code did next. The
-- checks are made on the first; the second continues what the first wrote.
-- Returns {'ok', new length, id of the last appended entry ('' if none), next task},
-- {'conflict', current length} or {'closed', status, next task}; the next task (see
-- take_next) is {stream, {id, fields}} or nil.
-- KEYS: meta, history, the task's stream, timers, activity stream, workflow stream,
--       close notice
-- ARGV: workflow id, expected history length, task id, status index prefix, consumer
--       group, plans {{t = time (ms), events = {{type, seq, data}}, meta = {k, v, ...},
--       meta_del = {k, ...}, timers = {{score, member}}, timers_del = {member, ...},
--       tasks = {{k, v, ...}}, status = new status, wft = '0' (or '1' to keep the task
--       flag, when suspending), activity = seq of the activity whose outcome is the
--       first event (or nil)}}, owner index prefix, consumer to take the next task for
--       ('' for none)
local meta, history, queue, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local activities, workflows = KEYS[5], KEYS[6]
local workflow_id, expected, task_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local index_prefix, group = ARGV[4], ARGV[5]
local status, seen = open_status(meta)
if not status then
  ack(queue, group, task_id)
  return {'closed', seen or '', take_next(group, ARGV[8], activities, workflows)}
end
local length = redis.call('XLEN', history)
if length ~= expected then return {'conflict', tostring(length)} end
local plans = cmsgpack.unpack(ARGV[6])
-- A commit that also records an activity's outcome (plan.activity = its seq) runs where
-- no workflow task is queued and the activity still waits for its outcome; it acks the
-- activity task.
local first = plans[1]
if first.activity and (redis.call('HGET', meta, 'wft') == '1'
    or redis.call('HGET', meta, 'a:' .. first.activity) ~= '1') then
  return {'conflict', tostring(length)}
end
local last_id, closing = '', nil
for _, plan in ipairs(plans) do
  local now = plan.t
  for _, event in ipairs(plan.events) do
    last_id = append_event(history, event[1], event[2], now, event[3])
    if CLOSING[event[1]] then
      closing = {last_id, {'type', event[1], 'seq', event[2], 't', now, 'd', event[3]}}
    end
  end
  length = length + #plan.events
  -- The plan's meta, its task flag, and its status if it changes: one write.
  local fields, deleted = plan.meta, plan.meta_del
  for _, field in ipairs({'wft', plan.wft, 'updated', now, 'hlen', length}) do
    fields[#fields + 1] = field
  end
  if plan.status ~= status then
    redis.call('ZREM', index_prefix .. status, workflow_id)
    redis.call('ZADD', index_prefix .. plan.status, now, workflow_id)
    fields[#fields + 1] = 'status'
    fields[#fields + 1] = plan.status
    -- A task that runs cleanly resumes a suspended workflow.
    if status == 'SUSPENDED' then deleted[#deleted + 1] = 'suspended' end
  end
  redis.call('HSET', meta, unpack(fields))
  if #deleted > 0 then redis.call('HDEL', meta, unpack(deleted)) end
  for _, timer in ipairs(plan.timers) do redis.call('ZADD', timers, timer[1], timer[2]) end
  for _, member in ipairs(plan.timers_del) do redis.call('ZREM', timers, member) end
  for _, task in ipairs(plan.tasks) do redis.call('XADD', activities, '*', unpack(task)) end
  status = plan.status
  if TERMINAL[status] then
    -- An owner's index lists its open workflows only, so progress reads stay small.
    local owner = redis.call('HGET', meta, 'owner')
    if owner and owner ~= '' then redis.call('ZREM', ARGV[7] .. owner, workflow_id) end
    if redis.call('HDEL', meta, 'waited') == 1 then push_close_notice(KEYS[7], closing or {}) end
  end
end
ack(queue, group, task_id)
return {'ok', tostring(length), last_id, take_next(group, ARGV[8], activities, workflows)}
