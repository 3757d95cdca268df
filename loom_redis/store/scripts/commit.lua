-- Commit a workflow task: append its events, enqueue its activities, add its timers,
-- update meta and indexes, acknowledge the task. The history length the worker read
-- is the fencing token: if the history moved since, nothing is written.
-- A commit holds one plan, or two when the worker ran the first activity the task
-- scheduled at once: the second records its outcome and what the code did next. The
-- checks are made on the first; the second continues what the first wrote, and the meta
-- and the status index are written once, as the last plan leaves them (a plan never
-- sets a meta field an earlier one deletes: the seqs in field names are new).
-- External events (signals, activity outcomes, timers fired, a cancel request; EXTERNAL)
-- that arrived after the entry the worker read last do not fence a commit of one plan
-- out: under a steady stream of them it would lose every time. The commit appends its
-- events after them, and its WORKFLOW_TASK_COMPLETED says how many it did not see
-- ({skip = k}), so that a replay feeds them to the next task; it requests that task.
-- Anything else after the entry read (another worker's commit) is a conflict.
-- Returns {'ok', new length, id of the last appended entry ('' if none), next task,
-- entries skipped}, {'conflict', current length} or {'closed', status, next task}; the
-- next task (see take_next) is {stream, {id, fields}} or nil.
-- A commit that closes the workflow adds it to the expiry index, scored by the end of its
-- retention (the close time plus its start's retention, else the namespace's), for the
-- retention sweep (see delete_closed.lua).
-- KEYS: meta, history, the task's stream, timers, activity stream, workflow stream,
--       close notice, expiry index
-- ARGV: workflow id, expected history length, task id, status index prefix, consumer
--       group, plans {{t = time (ms), events = {{type, seq, data}}, meta = {k, v, ...},
--       meta_del = {k, ...}, timers = {{score, member}}, timers_del = {member, ...},
--       tasks = {{k, v, ...}}, status = new status, wft = '0' (or '1' to keep the task
--       flag, when suspending), activity = seq of the activity whose outcome is the
--       first event (or nil)}}, owner index prefix, consumer to take the next task for
--       ('' for none), id of the last history entry the worker read ('' to allow no
--       skipped events), the namespace's retention (ms)
local meta, history, queue, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local activities, workflows = KEYS[5], KEYS[6]
local workflow_id, expected, task_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local index_prefix, group = ARGV[4], ARGV[5]
local plans = cmsgpack.unpack(ARGV[6])
local first = plans[1]
-- A commit that also records an activity's outcome (plan.activity = its seq) runs where
-- no workflow task is queued and the activity still waits for its outcome; it acks the
-- activity task.
local found = redis.call('HMGET', meta, 'status', 'wft', 'owner', 'a:' .. (first.activity or ''),
  'dead', 'retention')
local status, owner = found[1], found[3]
if not status or TERMINAL[status] then
  ack(queue, group, task_id)
  return {'closed', status or '', take_next(group, ARGV[8], activities, workflows)}
end
local length = redis.call('XLEN', history)
local skipped = {}
if length ~= expected then
  local closes = first.events[#first.events]
  if #plans > 1 or first.activity or not closes or closes[1] ~= 'WORKFLOW_TASK_COMPLETED' then
    return {'conflict', tostring(length)}
  end
  skipped = arrived_while_running(history, ARGV[9], length - expected)
  if not skipped then return {'conflict', tostring(length)} end
  closes[3] = cmsgpack.pack({skip = #skipped})
end
if first.activity and (found[2] == '1' or found[4] ~= '1') then
  return {'conflict', tostring(length)}
end
local last = plans[#plans]
local follows = #skipped > 0 and not TERMINAL[last.status] and last.wft ~= '1'
-- The keys written below hold their types (meta and history were read above).
local written = {timers, 'zset', activities, 'stream', queue, 'stream', KEYS[7], 'list',
  index_prefix .. status, 'zset', index_prefix .. last.status, 'zset', KEYS[8], 'zset'}
if owner and owner ~= '' then
  written[#written + 1] = ARGV[7] .. owner
  written[#written + 1] = 'zset'
end
if follows then
  written[#written + 1] = workflows
  written[#written + 1] = 'stream'
end
expect_types(written)
local last_id, closing, now = '', nil, nil
local fields, deleted, timers_del = {}, {}, {}
for _, plan in ipairs(plans) do
  now = plan.t
  for _, event in ipairs(plan.events) do
    last_id = append_event(history, event[1], event[2], now, event[3])
    if CLOSING[event[1]] then
      closing = {last_id, {'type', event[1], 'seq', event[2], 't', now, 'd', event[3]}}
    end
  end
  length = length + #plan.events
  for _, value in ipairs(plan.meta) do fields[#fields + 1] = value end
  for _, field in ipairs(plan.meta_del) do deleted[#deleted + 1] = field end
  for _, timer in ipairs(plan.timers) do redis.call('ZADD', timers, timer[1], timer[2]) end
  for _, member in ipairs(plan.timers_del) do timers_del[#timers_del + 1] = member end
  for _, task in ipairs(plan.tasks) do redis.call('XADD', activities, '*', unpack(task)) end
end
-- Timers deleted after every plan's are added (members are never added again once
-- deleted: their seqs are new), so that the zset is never emptied and written again:
-- on a slot being moved to another master, that stops the script halfway ("non local
-- key": a key gone from the source is the target's).
for _, member in ipairs(timers_del) do redis.call('ZREM', timers, member) end
-- The meta, the task flag and the status as the last plan leaves them.
-- The task for the events skipped: queued here, as external.lua found the flag set.
if follows then redis.call('XADD', workflows, '*', 'k', 'w', 'wf', workflow_id) end
for _, field in ipairs({'wft', follows and '1' or last.wft, 'updated', now, 'hlen', length}) do
  fields[#fields + 1] = field
end
if last.status ~= status then
  redis.call('ZREM', index_prefix .. status, workflow_id)
  redis.call('ZADD', index_prefix .. last.status, now, workflow_id)
  fields[#fields + 1] = 'status'
  fields[#fields + 1] = last.status
  -- A task that runs cleanly resumes a suspended workflow.
  if status == 'SUSPENDED' then deleted[#deleted + 1] = 'suspended' end
end
-- A workflow that moves again no longer waits on a dead-lettered task.
if found[5] then deleted[#deleted + 1] = 'dead' end
call_in_pieces('HSET', meta, fields)
call_in_pieces('HDEL', meta, deleted)
if TERMINAL[last.status] then
  -- An owner's index lists its open workflows only, so progress reads stay small.
  if owner and owner ~= '' then redis.call('ZREM', ARGV[7] .. owner, workflow_id) end
  if redis.call('HDEL', meta, 'waited') == 1 then push_close_notice(KEYS[7], closing or {}) end
  -- A retention field that is no number (written by hand) gives way to the namespace's.
  local retention = tonumber(found[6] or '') or tonumber(ARGV[10])
  redis.call('ZADD', KEYS[8], tonumber(now) + retention, workflow_id)
end
ack(queue, group, task_id)
return {'ok', tostring(length), last_id, take_next(group, ARGV[8], activities, workflows),
  skipped}
