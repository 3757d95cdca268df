-- Put a dead-lettered task back on its queue, once: remove it from the dead-letter
-- stream and enqueue its original fields. A workflow task takes the workflow's task
-- flag again, unless a task is already queued for that workflow.
-- KEYS: dead, queue, meta (the dead stream itself when the task names no workflow)
-- ARGV: dead entry id, kind, field, value, ...
expect_types({KEYS[1], 'stream', KEYS[2], 'stream'})
if KEYS[3] ~= KEYS[1] then expect_types({KEYS[3], 'hash'}) end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return 'missing' end
-- The enqueue is the first write: a server out of memory refuses a script's first write
-- that may grow memory (not the later ones), so the task then stays where it is.
local queued = ARGV[2] == 'w' and redis.call('HGET', KEYS[3], 'wft') == '1'
if not queued then
  if ARGV[2] == 'w' then redis.call('HSET', KEYS[3], 'wft', '1') end
  local fields = {}
  for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
redis.call('XDEL', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], 'dead') == ARGV[1] then
  redis.call('HDEL', KEYS[3], 'dead')
end
if queued then return 'already-queued' end
return 'ok'
